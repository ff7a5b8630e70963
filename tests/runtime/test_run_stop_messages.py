"""What an operator reads when ``choreo run`` stops on its own: the reason, once, and nothing raw.

- A second replica on an unshared (SQLite) store is refused: at the default log level its
  stderr is the one ``Error:`` line naming a shared store; no raw librdkafka line
  (``%6|...|BGQUEUE|...``) from the admin client that asked the group.
- A static member fenced by another process with its instance id: the fence is said
  once (the ``Error:`` line and its hint), not also as librdkafka's FATAL line and a
  worker log line, and the fenced process does not remove the instance id it lost from
  the group (it is the other process's now).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from choreo.store.guard import group_members
from choreo.transports.factory import open_transport

from .fixtures.run_process import REPO, RunProcess, inventory_on_kafka

pytestmark = pytest.mark.kafka

_RAW_LIBRDKAFKA = re.compile(r"^%\d\|", re.MULTILINE)


def _wait_for_member(bootstrap: str, group: str, instance_id: str) -> None:
    """Wait until ``instance_id`` is a live member of ``group`` (a fresh group takes a moment)."""
    transport = open_transport("confluent", bootstrap=bootstrap)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            members = group_members(transport, group) or []
        except Exception:  # the coordinator is still loading: ask again
            members = []
        if any(m.instance_id == instance_id for m in members):
            return
        time.sleep(0.2)
    raise AssertionError(f"{instance_id} never joined {group}")


def _run_at_default_level(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``choreo run ARGS`` as an operator would (default log level), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "choreo", "run", *args],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_a_refused_sqlite_replica_prints_only_its_reason(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Exit 1 and one stderr line: the refusal naming a shared store; nothing from librdkafka."""
    prefix = f"refuse{uuid.uuid4().hex[:8]}."
    first = RunProcess(*inventory_on_kafka(kafka_bootstrap, tmp_path / "a.db", prefix))
    try:
        first.wait_for("worker started")
        _wait_for_member(kafka_bootstrap, f"{prefix}inventory", "inventory-0")
        second = [*inventory_on_kafka(kafka_bootstrap, tmp_path / "b.db", prefix)]
        second[-1] = "inventory-1"
        refused = _run_at_default_level(*second)
    finally:
        first.terminate()
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"Error: consumer group {prefix}inventory already has 1 live")
    assert "cannot be shared" in lines[0] and "postgresql://" in lines[0]
    assert not _RAW_LIBRDKAFKA.search(refused.stderr)


def test_a_fenced_static_member_says_so_once_and_leaves_the_id_to_the_other(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The fence once, as the Error line and its hint; no FATAL line, no traceback, no leave."""
    prefix = f"fence{uuid.uuid4().hex[:8]}."
    group = f"{prefix}inventory"
    first = RunProcess(*inventory_on_kafka(kafka_bootstrap, tmp_path / "a.db", prefix))
    second: RunProcess | None = None
    try:
        first.wait_for("worker started")
        _wait_for_member(kafka_bootstrap, group, "inventory-0")
        second = RunProcess(*inventory_on_kafka(kafka_bootstrap, tmp_path / "b.db", prefix))
        code = first.popen.wait(60)
        first.reader.join(5)
        output = first.output
        assert second.popen.poll() is None, second.output  # the newcomer keeps running
    finally:
        if first.popen.poll() is None:
            first.terminate()
        if second is not None:
            second.terminate()
    assert code == 1, output
    assert output.count("Static consumer fenced") == 1, output
    errors = output[output.index("Error: ") :].splitlines()
    assert errors == [
        "Error: worker inventory stopped: fatal client error: consumer error: Broker: Static "
        "consumer fenced by other consumer with same group.instance.id",
        f"Another member of group '{group}' took --instance-id 'inventory-0': another live "
        "process runs with it (give every replica its own --instance-id, or "
        "$CHOREO_INSTANCE_ID), or this process's own earlier join, lost while the group's "
        "coordinator moved (a restart recovers).",
    ], output
    assert "CRITICAL" not in output and "Traceback" not in output
    assert not _RAW_LIBRDKAFKA.search(output)
    assert "left group" not in output  # inventory-0 belongs to the newcomer now
