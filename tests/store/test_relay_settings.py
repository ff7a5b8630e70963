"""The outbox relay's settings (``WorkerConfig.relay_*``, ``choreo run --relay-*``,
``$CHOREO_RELAY_*``), and the relay in exactly-once mode on a shared store.

Real PostgreSQL server; the exactly-once test also a real Kafka broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from choreo.cli.run_cmd import run
from choreo.errors import ConfigurationError
from choreo.model.envelope import now_ms
from choreo.runtime import Worker, WorkerConfig
from choreo.store import OutboxRecord
from choreo.store.postgres import PostgresStore
from choreo.transports.factory import open_transport
from tests.runtime.fixtures.serdes import avro_serde
from tests.runtime.fixtures.shop import SCHEMAS_DIR, build_shop

REPO = Path(__file__).resolve().parents[2]
APP_INVENTORY = "tests.runtime.fixtures.cli_app:inventory"


@pytest.mark.parametrize(
    "settings",
    [{"relay_interval": 0.0}, {"relay_batch": 0}, {"relay_min_age": -1.0}],
)
def test_worker_config_refuses_impossible_relay_settings(settings: dict[str, Any]) -> None:
    """A relay that would spin, claim nothing or take rows from the future is refused."""
    with pytest.raises(ConfigurationError, match="relay"):
        WorkerConfig(**settings)


def test_choreo_run_reads_the_relay_settings_from_options_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``$CHOREO_RELAY_*`` fill the ``--relay-*`` options; an option given wins."""
    monkeypatch.setenv("CHOREO_RELAY_INTERVAL", "0.25")
    monkeypatch.setenv("CHOREO_RELAY_MIN_AGE", "12")
    monkeypatch.setenv("CHOREO_RELAY_BATCH", "40")
    args = [APP_INVENTORY, "--schemas", str(SCHEMAS_DIR), "--relay-batch", "7"]
    with run.make_context("run", args) as ctx:
        params = ctx.params
    assert (params["relay_interval"], params["relay_min_age"], params["relay_batch"]) == (
        0.25,
        12.0,
        7,
    )
    monkeypatch.delenv("CHOREO_RELAY_MIN_AGE")
    with run.make_context("run", [APP_INVENTORY, "--schemas", str(SCHEMAS_DIR)]) as ctx:
        assert ctx.params["relay_min_age"] is None  # the store's default: 5 s when shared
        assert ctx.params["relay_batch"] == 40


def _records(n: int, topic: str, tag: str) -> list[OutboxRecord]:
    return [
        OutboxRecord(f"{tag}-{i}", topic, b"cid-%d" % (i % 3), b"%s-%d" % (tag.encode(), i), [])
        for i in range(n)
    ]


def _leave_rows(url: str, schema: str, origin: str, batches: list[list[OutboxRecord]]) -> None:
    """Commit ``batches`` into the outbox as a replica that died before publishing them."""
    dead = PostgresStore(url, schema=schema)
    for records in batches:
        dead.begin()
        dead.enqueue(origin, records)
        dead.commit()
    dead.close()


def _pending_ids(url: str, schema: str, origin: str) -> list[str]:
    check = PostgresStore(url, schema=schema)
    try:
        return [record.id for record in check.pending(origin)]
    finally:
        check.close()


def test_choreo_run_relays_only_rows_older_than_its_relay_min_age(
    postgres_url: str, unique_name: Callable[[str], str]
) -> None:
    """With ``$CHOREO_RELAY_MIN_AGE=3600`` a two-hour-old row is relayed, a fresh one not."""
    schema = f"relaycfg_{uuid.uuid4().hex[:10]}"
    group = unique_name("inventory")
    origin = f"worker.{group}"
    _leave_rows(postgres_url, schema, origin, [_records(2, "relayed", "old")])
    _leave_rows(postgres_url, schema, origin, [_records(2, "relayed", "new")])
    store = PostgresStore(postgres_url, schema=schema)
    store.begin()
    store.connection.execute(
        "UPDATE choreo_outbox SET created_ms = %s WHERE seq = (SELECT min(seq) FROM choreo_outbox)",
        (now_ms() - 2 * 3_600_000,),
    )
    store.commit()
    store.close()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "250",
        "CHOREO_STORE": f"{postgres_url}?schema={schema}",
        "CHOREO_RELAY_MIN_AGE": "3600",
    }
    command = [sys.executable, "-m", "choreo", "--log-level", "INFO", "run", APP_INVENTORY]
    command += ["--transport", "memory", "--schemas", str(SCHEMAS_DIR), "--group", group]
    command += ["--relay-interval", "0.2"]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while _pending_ids(postgres_url, schema, origin) != ["new-0", "new-1"]:
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        rounds_later = time.monotonic() + 1.5  # several more relay rounds of 0.2 s
        while time.monotonic() < rounds_later:
            assert _pending_ids(postgres_url, schema, origin) == ["new-0", "new-1"]
            time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(30)
        reader.join(10)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert "relayed 2 outbox record(s)" in output


@pytest.mark.kafka
def test_exactly_once_replicas_on_a_shared_store_publish_leftover_rows_once(
    kafka_bootstrap: str, postgres_url: str, unique_name: Callable[[str], str]
) -> None:
    """Two exactly-once replicas starting on a shared outbox publish each leftover row once.

    The rows were left by an at-least-once replica that died before publishing. Each
    replica's relay claims rows with ``SKIP LOCKED``; neither replays the whole outbox at
    start (which would publish every row twice). Per key, the stored order is kept.
    """
    schema = f"eosrelay_{uuid.uuid4().hex[:10]}"
    group = unique_name("inventory")
    topic = unique_name("leftover")
    origin = f"worker.{group}"
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    transport.create_topics([topic], partitions=3)
    batches = [_records(15, topic, f"b{n}") for n in range(24)]
    _leave_rows(postgres_url, schema, origin, batches)
    shop = build_shop()
    workers: list[tuple[Worker, threading.Thread]] = []
    stop = threading.Event()
    for instance in ("a", "b"):
        config = WorkerConfig(
            group_id=group,
            exactly_once=True,
            instance_id=f"{group}-{instance}",
            relay_interval=0.1,
            relay_min_age=0.0,
            relay_batch=30,
        )
        worker = Worker(
            shop.inventory,
            transport,
            avro_serde(),
            config=config,
            inbox=PostgresStore(postgres_url, schema=schema),
        )
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        workers.append((worker, thread))
    for _, thread in workers:
        thread.start()
    want = sum(len(batch) for batch in batches)
    try:
        deadline = time.monotonic() + 90
        while _pending_ids(postgres_url, schema, origin):
            assert time.monotonic() < deadline, "the relays left rows in the outbox"
            time.sleep(0.3)
    finally:
        stop.set()
        for worker, thread in workers:
            thread.join(30)
            worker.inbox.close()
    consumer = transport.consumer(f"reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + 60
    while len(found) < want and time.monotonic() < deadline:
        found.extend(consumer.poll(500, 0.5))
    found.extend(consumer.poll(500, 2.0))  # anything beyond ``want`` is a duplicate
    consumer.close()
    values = Counter(record.value for record in found)
    assert len(found) == want, f"{len(found)} records for {want} rows"
    assert set(values.values()) == {1}
    relayed = sum(worker._relay.published for worker, _ in workers if worker._relay)
    assert relayed == want
    by_key: dict[bytes, list[int]] = {}
    for record in sorted(found, key=lambda r: (r.partition, r.offset)):
        batch, index = record.value.decode().split("-")
        by_key.setdefault(record.key, []).append(int(batch[1:]) * 100 + int(index))
    for key, order in by_key.items():
        assert order == sorted(order), f"records of key {key!r} out of stored order"
