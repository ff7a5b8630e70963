"""A batch whose store COMMIT fails on PostgreSQL is handled again, nothing lost or doubled.

The worker's loop on a real server: a COMMIT that fails at commit time (a deferred
constraint trigger), and one that cannot even be sent (the last handler left the
transaction aborted), both roll the batch back; the consumer is rewound to the batch's
first offsets, so the next batch's offsets never skip it, and every order ends with one
row and one output.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from choreo.choreography.service import Service
from choreo.model.context import Context
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.runtime.middleware import Middleware, default_middleware
from choreo.store import Migration, execute
from choreo.store.postgres import PostgresStore
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced, StockReserved, StockUnavailable
from .fixtures.lost_answer import LostCommitAnswer
from .fixtures.serdes import avro_serde
from .fixtures.shop import RESERVATIONS, build_shop

RESERVED = "test.runtime.StockReserved"

# the transaction that holds order "boom" fails at COMMIT, the first time only (a
# sequence is not rolled back with it)
FAIL_ONCE_AT_COMMIT = Migration(
    2,
    "a COMMIT that fails once",
    [
        "CREATE SEQUENCE boom_trips",
        """CREATE FUNCTION boom_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.order_id = 'boom' AND nextval('boom_trips') = 1 THEN
            RAISE EXCEPTION 'boom at commit';
          END IF;
          RETURN NULL;
        END $$""",
        "CREATE CONSTRAINT TRIGGER boom AFTER INSERT ON reservations"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION boom_once()",
    ],
)


class _Watch(Middleware):
    """Stops the worker's loop once every record was delivered."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.stop = threading.Event()
        self.next: dict[Any, int] = {}

    def after_commit(self, worker: Any, offsets: dict[Any, int]) -> None:
        self.next.update(offsets)
        if sum(self.next.values()) >= self.total:
            self.stop.set()


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    """Yield a PostgresStore on a fresh schema."""
    opened = PostgresStore(postgres_url, schema=f"b_{uuid.uuid4().hex[:12]}")
    yield opened
    opened.close()


def _inventory(*migrations: Migration) -> tuple[Service, Counter[str]]:
    """A one-step service writing a reservation row per order through ``ctx.db``."""
    shop = build_shop()
    service = Service("behind", sagas=[shop.saga], migrations=[RESERVATIONS, *migrations])
    calls: Counter[str] = Counter()

    @service.step(on=OrderPlaced, emits=StockReserved, fails_with=StockUnavailable)
    def reserve(event: OrderPlaced, ctx: Context) -> StockReserved:
        calls[event.order_id] += 1
        execute(ctx.db, "INSERT INTO reservations (order_id, qty) VALUES (?, 1)", (event.order_id,))
        return StockReserved(event.order_id, event.sku, 1)

    return service, calls


def _orders(bus: MemoryBus, ids: list[str]) -> None:
    shop = build_shop()
    publisher = Publisher(shop.orders, MemoryTransport(bus), avro_serde())
    for order_id in ids:
        publisher.start(shop.saga, OrderPlaced(order_id, "book", 1, 100))


def _run(worker: Worker, watch: _Watch, seconds: float) -> None:
    """Run the worker's loop on a thread until ``watch`` says every record was delivered."""
    thread = threading.Thread(target=worker.run, args=(watch.stop,), daemon=True)
    thread.start()
    stopped = watch.stop.wait(seconds)
    watch.stop.set()
    thread.join(30)
    assert stopped, f"not every record was delivered within {seconds:.0f} s"


def _reserved(bus: MemoryBus) -> Counter[bytes]:
    return Counter(headers_to_dict(r.headers)[Header.EVENT_ID] for r in bus.records(RESERVED))


def _rows(store: PostgresStore) -> list[str]:
    store.begin()
    rows = store.connection.execute("SELECT order_id FROM reservations").fetchall()
    store.commit()
    return sorted(row[0] for row in rows)


def _worker(
    service: Service, bus: MemoryBus, store: PostgresStore, watch: _Watch, **config: Any
) -> Worker:
    settings = {"poll_timeout": 0.01, "max_poll_records": 50, "error_backoff": 0.05, **config}
    return Worker(
        service,
        MemoryTransport(bus),
        avro_serde(),
        config=WorkerConfig(**settings),
        inbox=store,
        middleware=[*default_middleware(), watch],
    )


@pytest.mark.parametrize("behind", [True, False], ids=["commit-behind", "commit-waited"])
def test_a_commit_failing_at_commit_time_redoes_the_batch(
    store: PostgresStore, caplog: pytest.LogCaptureFixture, behind: bool
) -> None:
    """The batch holding "boom" fails at COMMIT (a deferred trigger): it is handled
    again, and every order ends with one row and one output. With the COMMIT sent behind
    the failure is read after the next batch was handled: that batch is rolled back and
    handled again too, and the consumer goes back to the failed batch's first offsets."""
    bus = MemoryBus()
    ids = [f"o{i}" for i in range(300)]
    ids[120] = "boom"  # in the third batch of 50
    _orders(bus, ids)
    service, calls = _inventory(FAIL_ONCE_AT_COMMIT)
    watch = _Watch(len(ids))
    worker = _worker(service, bus, store, watch, commit_behind=behind)
    _run(worker, watch, 60)
    assert len(_reserved(bus)) == 300 and set(_reserved(bus).values()) == {1}
    assert _rows(store) == sorted(ids)
    assert calls["boom"] == 2  # its batch was handled again after the failed COMMIT
    assert all(calls[order] == 2 for order in ids[100:150])  # the whole batch
    # the fourth batch was handled behind the failed COMMIT only when it was sent behind
    assert {calls[order] for order in ids[150:200]} == ({2} if behind else {1})
    assert {calls[order] for order in ids[:100] + ids[200:]} == {1}
    assert "boom at commit" in caplog.text
    with psycopg.connect(store._pool.conninfo) as conn:  # the trigger did fire
        trips = conn.execute(f'SELECT last_value FROM "{store.schema}".boom_trips').fetchone()
    assert trips is not None and trips[0] >= 1


def test_a_failed_commit_lets_no_relay_publish_what_the_worker_published_itself(
    store: PostgresStore,
) -> None:
    """After a failed COMMIT the store writes under a new owner id; the rows it wrote under
    the old one and publishes itself (acknowledged, their deletion riding on the next
    batch) must not be taken by its relay meanwhile, however long the retry waits."""
    bus = MemoryBus()
    ids = [f"o{i}" for i in range(300)]
    ids[120] = "boom"  # in the third batch of 50: the second's row is still tracked
    _orders(bus, ids)
    service, _ = _inventory(FAIL_ONCE_AT_COMMIT)
    watch = _Watch(len(ids))
    worker = _worker(
        service,
        bus,
        store,
        watch,
        error_backoff=1.0,  # the relay has five rounds past the rows' minimum age
        relay_interval=0.1,
        relay_min_age=0.2,
    )
    _run(worker, watch, 60)
    reserved = _reserved(bus)
    assert len(reserved) == 300
    assert set(reserved.values()) == {1}, "a row the worker published was relayed again"


def test_a_batch_whose_commit_cannot_be_sent_is_handled_again(store: PostgresStore) -> None:
    """The last handler of a batch leaves its transaction aborted once (it swallowed a
    failed statement): sending the COMMIT raises, and the batch must be read again, not
    skipped by the consumer position while the next batch's offsets are committed."""
    bus = MemoryBus()
    ids = [f"o{i}" for i in range(100)]
    ids[49] = "bad"  # the first batch's last record
    _orders(bus, ids)
    shop = build_shop()
    service = Service("behind", sagas=[shop.saga], migrations=[RESERVATIONS])
    calls: Counter[str] = Counter()

    @service.step(on=OrderPlaced, emits=StockReserved, fails_with=StockUnavailable)
    def reserve(event: OrderPlaced, ctx: Context) -> StockReserved:
        calls[event.order_id] += 1
        execute(ctx.db, "INSERT INTO reservations (order_id, qty) VALUES (?, 1)", (event.order_id,))
        if event.order_id == "bad" and calls["bad"] == 1:
            with contextlib.suppress(psycopg.Error):
                ctx.db.execute("SELECT 1/0")  # aborts the transaction, error swallowed
        return StockReserved(event.order_id, event.sku, 1)

    watch = _Watch(len(ids))
    worker = _worker(service, bus, store, watch)
    _run(worker, watch, 60)
    assert calls["bad"] == 2
    assert _rows(store) == sorted(ids)
    assert len(_reserved(bus)) == 100 and set(_reserved(bus).values()) == {1}


def test_a_batch_whose_commit_answer_was_lost_is_published_by_its_own_relay(
    postgres_url: str,
) -> None:
    """The link to the server is lost while the first batch's COMMIT runs, after the
    server committed it: the worker takes the batch as failed and reads it again, every
    record is found handled, and the batch's outbox row, which did commit, is published
    by this worker's own relay at its next round (one replica: no other relay would ever
    take it), without waiting for the relay's minimum age."""
    bus = MemoryBus()
    ids = [f"o{i}" for i in range(100)]
    _orders(bus, ids)
    service, calls = _inventory()
    armed = threading.Event()
    with LostCommitAnswer(postgres_url) as link:

        class _ArmAtFirstBatch(Middleware):
            def before_dispatch(self, worker: Worker, event: Any) -> None:
                if not armed.is_set():
                    armed.set()
                    link.arm(after=b"INSERT INTO choreo_outbox")

        store = PostgresStore(link.url, schema=f"b_{uuid.uuid4().hex[:12]}")
        # a minimum age longer than the test: the row of a retired owner id goes at once
        settings = {"error_backoff": 0.05, "relay_interval": 0.1, "relay_min_age": 120.0}
        worker = Worker(
            service,
            MemoryTransport(bus),
            avro_serde(),
            config=WorkerConfig(poll_timeout=0.01, max_poll_records=50, **settings),
            inbox=store,
            middleware=[*default_middleware(), _ArmAtFirstBatch()],
        )
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while len(_reserved(bus)) < len(ids) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(30)
            store.close()
    assert link.lost.is_set()  # the first COMMIT did commit, and its answer was lost
    assert set(calls.values()) == {1} and len(calls) == len(ids)  # read again: all handled
    assert len(_reserved(bus)) == len(ids), "the lost answer's outputs were never published"
