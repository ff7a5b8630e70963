"""A COMMIT sent behind that fails while a cooperative rebalance revokes part of the
assignment: nothing after the failed batch is handled (or its offsets committed) before
the consumer was rewound to it (real broker, real PostgreSQL).

The failure is read in the revocation callback, inside a poll that then returns records
of the partitions the worker kept, fetched after the failed batch. Handled, their batch's
offsets would be committed while the failed batch's records were not in the database yet
(a crash or a second failure then loses them for good).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from choreo.choreography.service import Service
from choreo.model.context import Context
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Middleware, Publisher, Worker, WorkerConfig
from choreo.store import Migration, execute
from choreo.store.postgres import PostgresStore
from choreo.transports.base import Record, TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

from .fixtures.events import OrderPlaced, StockReserved
from .fixtures.serdes import avro_serde
from .fixtures.shop import build_shop

pytestmark = pytest.mark.kafka

ORDERS = "test.runtime.OrderPlaced"
CONSUMER = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 300,
    "fetch.wait.max.ms": 50,
    "partition.assignment.strategy": "cooperative-sticky",
}
TABLES = Migration(
    1,
    "handled events, and a deferred check a poisoned batch fails at COMMIT",
    [
        "CREATE TABLE handled (event_id TEXT PRIMARY KEY)",
        "CREATE TABLE poison (k INT, CONSTRAINT one UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)",
    ],
)


class _Scenario(Middleware):
    """Poisons one batch spanning both partitions, starts a second member while its COMMIT
    is behind, and checks every offset commit against the database."""

    def __init__(self, url: str, start_second: Any) -> None:
        self.url = url
        self.start_second = start_second
        self.poison_next = False
        self.poisoned = False
        self.joined = False
        self.polled: dict[TopicPartition, dict[int, str]] = {}
        self.violations: list[str] = []

    def after_poll(self, worker: Worker, records: list[Record]) -> None:
        for record in records:
            event_id = headers_to_dict(record.headers)[Header.EVENT_ID]
            self.polled.setdefault(record.topic_partition, {})[record.offset] = (
                event_id.decode() if isinstance(event_id, bytes) else str(event_id)
            )
        if not self.poisoned and len({r.topic_partition for r in records}) == 2:
            self.poison_next = self.poisoned = True

    def before_poll(self, worker: Worker) -> None:
        if self.poisoned and not self.joined and worker.delivery.behind:
            self.joined = True
            self.start_second()
            time.sleep(6)  # the cooperative revocation reaches this member's queue

    def after_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
        below = {
            event_id
            for tp, offset in offsets.items()
            for at, event_id in self.polled.get(tp, {}).items()
            if at < offset
        }
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT event_id FROM handled WHERE event_id = ANY(%s)", (list(below),)
            ).fetchall()
        missing = below - {row[0] for row in rows}
        if missing:
            self.violations.append(f"offsets {offsets} committed past {len(missing)} unstored")


def _service(scenario: _Scenario) -> Service:
    shop = build_shop()
    service = Service("behindrevoke", sagas=[shop.saga], migrations=[TABLES])

    @service.step(on=OrderPlaced, emits=StockReserved)
    def reserve(event: OrderPlaced, ctx: Context) -> StockReserved:
        execute(ctx.db, "INSERT INTO handled VALUES (?)", (ctx.envelope.event_id,))
        if scenario.poison_next:  # this batch's COMMIT fails (once)
            scenario.poison_next = False
            execute(ctx.db, "INSERT INTO poison VALUES (1), (1)")
        return StockReserved(event.order_id, event.sku, 1)

    return service


def test_a_commit_failing_behind_on_a_cooperative_revoke_rewinds_before_anything_else(
    kafka_bootstrap: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Orders keep arriving on two partitions; one batch spanning both fails at COMMIT,
    read behind by the revocation a second member's join causes. Every offset commit of
    the first member is checked: no record below it may be missing from the database."""
    prefix = f"cbr{uuid.uuid4().hex[:10]}."
    schema = prefix[:-1]
    config = KafkaConfig(
        bootstrap_servers=kafka_bootstrap, client_id="choreo-behind", consumer=CONSUMER
    )
    feeder_transport = open_transport("confluent", config=config)
    feeder_transport.create_topics([f"{prefix}{ORDERS}"], partitions=2)
    stop_feeding = threading.Event()
    shop = build_shop()

    def settings(**extra: Any) -> WorkerConfig:
        return WorkerConfig(
            group_id=f"{prefix}inventory",
            max_poll_records=200,
            commit_interval=0.0,
            error_backoff=0.1,
            topic_partitions=2,
            topic_naming=lambda t: f"{prefix}{t}",
            deadletter_naming=lambda s: f"{prefix}deadletter.{s}",
            **extra,
        )

    def feed() -> None:
        publisher = Publisher(shop.orders, feeder_transport, avro_serde(), config=settings())
        n = 0
        while not stop_feeding.is_set():
            for _ in range(20):
                publisher.start(shop.saga, OrderPlaced(f"o{n}", "book", 1, 100))
                n += 1
            time.sleep(0.05)
        publisher.close()

    stores = [PostgresStore(postgres_url, schema=schema) for _ in range(2)]
    threads: list[threading.Thread] = []
    workers: list[Worker] = []

    def start(store: PostgresStore, middleware: list[Middleware]) -> None:
        worker = Worker(
            _service(scenario),
            open_transport("confluent", config=config),
            avro_serde(),
            config=settings(),
            inbox=store,
            middleware=middleware,
        )
        workers.append(worker)
        thread = threading.Thread(target=worker.run, daemon=True)
        threads.append(thread)
        thread.start()

    scenario = _Scenario(_with_schema(postgres_url, schema), lambda: start(stores[1], []))
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    caplog.set_level(logging.WARNING)
    try:
        start(stores[0], [scenario])
        deadline = time.monotonic() + 90
        while not (scenario.joined and len(workers) == 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(10)  # the failed batch is redone
    finally:
        stop_feeding.set()
        feeder.join(30)
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(60)
        for store in stores:
            store.close()
    assert scenario.joined, "no batch spanning both partitions was polled"
    assert "store commit failed on revoke" in caplog.text, "the revocation did not read the failure"
    assert scenario.violations == []


def _with_schema(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"
