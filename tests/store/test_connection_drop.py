"""A worker's PostgreSQL connection killed under it: one WARNING line per drop, nothing lost.

Real broker, real PostgreSQL. ``pg_terminate_backend`` ends every session of the store's
pool twice: once while the worker is idle between batches, once while a handler's own
statement runs. Each time the log carries exactly one WARNING line, from the worker,
saying the connection was lost and that the batch is rolled back and retried (its
traceback at DEBUG, psycopg's own warnings about the dead connection at DEBUG too), no
ERROR, and every order is handled exactly once afterwards (none dead-lettered).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from choreo.choreography.service import Service
from choreo.model.context import Context
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.safety.redact import install_log_redaction
from choreo.store.postgres import PostgresStore
from choreo.transports.factory import open_transport
from choreo.transports.librdkafka_log import LIBRDKAFKA_LOGGER
from tests.runtime.fixtures.events import OrderPlaced, StockReserved, StockUnavailable
from tests.runtime.fixtures.serdes import avro_serde
from tests.runtime.fixtures.shop import RESERVATIONS, Shop, build_shop

pytestmark = pytest.mark.kafka

_TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE pid <> pg_backend_pid() AND application_name = %s"
)


def _reservations(url: str, schema: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f'SELECT order_id FROM "{schema}".reservations').fetchall()
    return sorted(row[0] for row in rows)


def _terminate(url: str, application: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(_TERMINATE, (application,)).fetchone()
    return int(row[0]) if row else 0


class Run:
    """A worker of a one-step service on a PostgresStore, with a publisher of its orders."""

    def __init__(self, bootstrap: str, url: str, shop: Shop, service: Service) -> None:
        prefix = f"pgdrop{uuid.uuid4().hex[:8]}."
        self.application = f"choreo-test-{uuid.uuid4().hex[:8]}"
        self.schema = f"pgdrop_{uuid.uuid4().hex[:10]}"
        self.url = url
        self.shop = shop
        sep = "&" if "?" in url else "?"
        self.store = store = PostgresStore(
            f"{url}{sep}application_name={self.application}", schema=self.schema
        )
        transport = open_transport("confluent", bootstrap=bootstrap)
        config = WorkerConfig(
            group_id=f"{prefix}group",
            topic_naming=lambda event_type: f"{prefix}{event_type}",
            deadletter_naming=lambda name: f"{prefix}{name}.dead",
        )
        self.worker = Worker(service, transport, avro_serde(), config=config, inbox=store)
        self.publisher = Publisher(shop.orders, transport, avro_serde(), config=config)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def order(self, *ids: str) -> None:
        for order_id in ids:
            self.publisher.start(self.shop.saga, OrderPlaced(order_id, "book", 1, 100))
        self.publisher.flush()

    def wait_for(self, count: int) -> list[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                done = _reservations(self.url, self.schema)
            except psycopg.errors.UndefinedTable:  # the worker has not migrated yet
                done = []
            if len(done) >= count:
                return done
            time.sleep(0.2)
        raise AssertionError(f"only {_reservations(self.url, self.schema)} reserved")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.publisher.close()
        self.store.close()  # the worker does not own it: its pool's threads end here


@pytest.fixture
def run(kafka_bootstrap: str, postgres_url: str) -> Iterator[Callable[[Service, Shop], Run]]:
    started: list[Run] = []

    def start(service: Service, shop: Shop) -> Run:
        started.append(Run(kafka_bootstrap, postgres_url, shop, service))
        return started[-1]

    yield start
    for each in started:
        each.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """choreo's and psycopg's WARNING and ERROR records. librdkafka's lines (relayed on
    ``choreo.transports.librdkafka``) and kafka-python's are left out: a loaded machine
    makes them warn of slow requests, which says nothing about the dropped connection."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and r.name.split(".")[0] in ("choreo", "psycopg")
        and r.name != LIBRDKAFKA_LOGGER.name
    ]


def test_a_dropped_connection_is_one_warning_and_the_batch_is_redone(
    run: Callable[[Service, Shop], Run], caplog: pytest.LogCaptureFixture
) -> None:
    """Dropped while idle, and while a handler's statement runs: one WARNING each, all handled."""
    install_log_redaction()
    caplog.set_level(logging.DEBUG, logger="choreo")
    caplog.set_level(logging.DEBUG, logger="psycopg")
    shop = build_shop()
    service = Service("pgdrop", sagas=[shop.saga], migrations=[RESERVATIONS])
    in_handler = threading.Event()

    @service.step(on=OrderPlaced, emits=StockReserved, fails_with=StockUnavailable)
    def reserve(event: OrderPlaced, ctx: Context) -> StockReserved:
        db: Any = ctx.db
        if event.order_id == "slow" and not in_handler.is_set():
            in_handler.set()
            db.execute("SELECT pg_sleep(5)")  # ended by pg_terminate_backend
        db.execute("INSERT INTO reservations (order_id, qty) VALUES (%s, 1)", (event.order_id,))
        return StockReserved(event.order_id, event.sku, 1)

    worker = run(service, shop)
    worker.order("a0", "a1", "a2")
    worker.wait_for(3)

    caplog.clear()
    assert _terminate(worker.url, worker.application) >= 1
    worker.order("b0", "b1")
    assert worker.wait_for(5) == ["a0", "a1", "a2", "b0", "b1"]
    idle_drop = _warnings(caplog)

    caplog.clear()
    worker.order("slow")
    assert in_handler.wait(30)
    time.sleep(0.3)  # pg_sleep has started
    assert _terminate(worker.url, worker.application) >= 1
    worker.order("c0")
    assert worker.wait_for(7) == ["a0", "a1", "a2", "b0", "b1", "c0", "slow"]
    handler_drop = _warnings(caplog)

    for warnings in (idle_drop, handler_drop):
        assert [(r.name, r.levelname) for r in warnings] == [
            ("choreo.runtime.worker", "WARNING")
        ], [r.getMessage() for r in warnings]
        line = warnings[0].getMessage()
        assert line.startswith("[pgdrop - cid=-] the store's database connection was lost ("), line
        assert line.endswith(": retrying the batch in 1.0 s (partitions paused, nothing skipped)")
        assert "\n" not in line and warnings[0].exc_info is None
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert tracebacks  # the traceback is kept, at DEBUG
