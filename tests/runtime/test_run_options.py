"""``choreo run`` options a team scaling a service out needs: partitions, and its store's password.

- ``--partitions`` / ``$CHOREO_TOPIC_PARTITIONS``: topics created with one partition give a
  second replica nothing to do; checked on a real broker.
- ``--store`` with a password on the command line: any user of the machine reads it with
  ``ps``, so the worker warns and names the private ways ($CHOREO_STORE, $PGPASSWORD,
  ~/.pgpass); the same URL from the environment draws no warning. Neither shows it.
"""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient

from choreo.cli.run_cmd import run

from .fixtures.run_process import APP, RunProcess
from .fixtures.shop import SCHEMAS_DIR

SECRET = "Cmd-" + uuid.uuid4().hex[:12]


def _partitions(bootstrap: str, prefix: str) -> dict[str, int]:
    """Return the partition count of every topic whose name starts with ``prefix``."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if name.startswith(prefix)
    }


def _inventory_args(bootstrap: str, prefix: str, *extra: str) -> tuple[str, ...]:
    """Return ``choreo run`` arguments for the test app's inventory on ``prefix``'s topics."""
    return (
        f"{APP}:inventory",
        "--bootstrap",
        bootstrap,
        "--schemas",
        str(SCHEMAS_DIR),
        "--store",
        "memory:",
        "--group",
        f"{prefix}inventory",
        "--topic-prefix",
        prefix,
        *extra,
    )


def _start_and_stop(bootstrap: str, prefix: str, *extra: str) -> str:
    """Run the test app's inventory until its worker started, SIGTERM it; return its output."""
    process = RunProcess(*_inventory_args(bootstrap, prefix, *extra))
    try:
        process.wait_for("worker started")
    finally:
        code = process.terminate()
    assert code == 0, process.output
    return process.output


@pytest.mark.kafka
def test_partitions_from_the_option_or_the_environment_size_the_created_topics(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every topic the worker creates (read, written, dead letters) gets that many partitions."""
    by_option = f"parts{uuid.uuid4().hex[:8]}."
    _start_and_stop(kafka_bootstrap, by_option, "--partitions", "3")
    created = _partitions(kafka_bootstrap, by_option)
    assert len(created) >= 3  # its input, its outputs and its dead-letter topic
    assert set(created.values()) == {3}, created

    by_env = f"parts{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("CHOREO_TOPIC_PARTITIONS", "4")
    _start_and_stop(kafka_bootstrap, by_env)
    assert set(_partitions(kafka_bootstrap, by_env).values()) == {4}

    # existing topics are left as they are: a second start with another count changes nothing
    _start_and_stop(kafka_bootstrap, by_option, "--partitions", "5")
    assert _partitions(kafka_bootstrap, by_option) == created


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_store_password_on_the_command_line_is_warned_about_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--store with a password: a warning naming the private ways; from CHOREO_STORE: none."""
    caplog.set_level(logging.WARNING, logger="choreo.cli.run_cmd")
    url = f"postgresql://app:{SECRET}@127.0.0.1:{_closed_port()}/shop?schema=rooms"
    args = [f"{APP}:inventory", "--transport", "memory", "--schemas", str(SCHEMAS_DIR)]

    on_argv = CliRunner().invoke(run, [*args, "--store", url])
    assert on_argv.exit_code == 1
    assert "cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:" in on_argv.output
    warnings = [r.getMessage() for r in caplog.records if "--store" in r.getMessage()]
    assert len(warnings) == 1
    assert "process list (ps)" in warnings[0]
    for private in ("$CHOREO_STORE", "$PGPASSWORD", "~/.pgpass"):
        assert private in warnings[0]

    first_logs = caplog.text
    caplog.clear()
    from_env = CliRunner().invoke(run, args, env={"CHOREO_STORE": url})
    assert from_env.exit_code == 1
    assert "cannot connect to PostgreSQL" in from_env.output
    assert not [r for r in caplog.records if "--store" in r.getMessage()]
    everything = on_argv.output + from_env.output + first_logs + caplog.text
    assert SECRET not in everything


@pytest.mark.kafka
def test_a_second_process_with_the_same_instance_id_ends_the_first_saying_what_to_do(
    kafka_bootstrap: str,
) -> None:
    """The fenced replica exits 1 naming the instance id, the group and the fix."""
    prefix = f"dup{uuid.uuid4().hex[:8]}."
    args = _inventory_args(kafka_bootstrap, prefix, "--instance-id", "inventory-7")
    first = RunProcess(*args)
    second: RunProcess | None = None
    try:
        first.wait_for("worker started")
        second = RunProcess(*args)
        code = first.popen.wait(60)
        first.reader.join(5)
    finally:
        if first.popen.poll() is None:
            first.terminate()
        if second is not None:
            second.terminate()
    assert code == 1, first.output
    assert "same group.instance.id" in first.output
    assert "took --instance-id 'inventory-7': another live process runs with it" in first.output
    assert f"'{prefix}inventory'" in first.output
