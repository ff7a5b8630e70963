"""``choreo run MODULE:SERVICE`` imports a service, runs its worker, and stops on SIGTERM."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from choreo.cli.run_cmd import run
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Publisher, WorkerConfig
from choreo.transports.factory import open_transport

from .fixtures.events import OrderPlaced
from .fixtures.run_process import RunProcess, inventory_on_kafka
from .fixtures.serdes import avro_serde
from .fixtures.shop import SCHEMAS_DIR, build_shop

APP = "tests.runtime.fixtures.cli_app"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "use MODULE:SERVICE"),
        ("tests.runtime.fixtures.nowhere:x", "cannot import"),
        (f"{APP}:missing", "has no attribute missing"),
        (f"{APP}:not_a_service", "not a choreo Service"),
    ],
)
def test_bad_targets_are_refused_with_a_reason(target: str, message: str) -> None:
    """A target that is not MODULE:SERVICE naming a Service exits 2 and says why."""
    result = CliRunner().invoke(run, [target, "--schemas", str(SCHEMAS_DIR)])
    assert result.exit_code == 2
    assert message in result.output


def test_sigterm_stops_the_worker_gracefully_on_the_memory_transport(tmp_path: Path) -> None:
    """The smoke run starts, subscribes, and exits 0 after SIGTERM, closing the worker."""
    process = RunProcess(
        f"{APP}:inventory",
        "--transport",
        "memory",
        "--schemas",
        str(SCHEMAS_DIR),
        "--inbox",
        str(tmp_path / "inbox.db"),
    )
    try:
        process.wait_for("worker started")
    finally:
        code = process.terminate()
    assert code == 0, process.output
    assert "SIGTERM received" in process.output
    assert "worker closed" in process.output
    assert (tmp_path / "inbox.db").exists()


@pytest.mark.kafka
def test_the_cli_worker_handles_events_from_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    """On confluent the CLI worker reserves stock for a published order, then stops on SIGTERM."""
    prefix = f"cli{uuid.uuid4().hex[:10]}."
    inbox = tmp_path / "inventory.db"
    with sqlite3.connect(inbox) as db:  # the service's own table, as its migrations would
        db.execute("CREATE TABLE reservations (order_id TEXT PRIMARY KEY, qty INT)")
    process = RunProcess(
        f"{APP}:inventory",
        "--transport",
        "confluent",
        "--bootstrap",
        kafka_bootstrap,
        "--schemas",
        str(SCHEMAS_DIR),
        "--inbox",
        str(inbox),
        "--group",
        f"{prefix}inventory",
        "--topic-prefix",
        prefix,
    )
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    try:
        process.wait_for("worker started")
        shop = build_shop()
        config = WorkerConfig(topic_naming=lambda t: f"{prefix}{t}")
        cid = Publisher(shop.orders, transport, avro_serde(), config=config).start(
            shop.saga, OrderPlaced("o1", "book", 3, 300)
        )
        consumer = transport.consumer(f"{prefix}reader")
        consumer.subscribe([f"{prefix}test.runtime.StockReserved"])
        found = []
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            found = consumer.poll(10, 0.5)
        consumer.close()
    finally:
        code = process.terminate()
    assert code == 0, process.output
    assert len(found) == 1
    assert headers_to_dict(found[0].headers)[Header.CORRELATION_ID] == cid.encode()
    with sqlite3.connect(inbox) as db:
        assert db.execute("SELECT order_id, qty FROM reservations").fetchall() == [("o1", 3)]
        assert db.execute("SELECT count(*) FROM choreo_inbox").fetchone() == (1,)


SESSION_TIMEOUT_S = 45.0  # the consumers' session.timeout.ms (librdkafka's default)


@pytest.mark.kafka
def test_a_worker_killed_with_sigkill_rejoins_at_once_with_its_instance_id(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With --instance-id a restarted worker takes its partition back within the dead session.

    A dynamic member would wait until the killed member's session expired; the static
    member replaces it, so the restarted worker is assigned and handles a new order long
    before that.
    """
    prefix = f"cli{uuid.uuid4().hex[:10]}."
    args = inventory_on_kafka(kafka_bootstrap, tmp_path / "inventory.db", prefix)
    with sqlite3.connect(tmp_path / "inventory.db") as db:
        db.execute("CREATE TABLE reservations (order_id TEXT PRIMARY KEY, qty INT)")
    first = RunProcess(*args)
    try:
        first.wait_for(f"assigned {prefix}")
    finally:
        first.popen.kill()
        first.popen.wait(30)
    killed = time.monotonic()
    second = RunProcess(*args)
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    try:
        second.wait_for(f"assigned {prefix}", timeout=SESSION_TIMEOUT_S - 15)
        rejoined = time.monotonic() - killed
        config = WorkerConfig(topic_naming=lambda t: f"{prefix}{t}")
        shop = build_shop()
        Publisher(shop.orders, transport, avro_serde(), config=config).start(
            shop.saga, OrderPlaced("o1", "book", 2, 200)
        )
        deadline = time.monotonic() + 30
        rows: list[Any] = []
        while not rows and time.monotonic() < deadline:
            with sqlite3.connect(tmp_path / "inventory.db") as db:
                rows = db.execute("SELECT order_id, qty FROM reservations").fetchall()
            time.sleep(0.1)
    finally:
        code = second.terminate()
    assert code == 0, second.output
    assert rejoined < SESSION_TIMEOUT_S
    assert rows == [("o1", 2)]
