"""The worker's loop on the PostgreSQL store: a batch's COMMIT read while the next batch runs.

In :meth:`Worker.run` the at-least-once delivery sends a batch's COMMIT and polls and
handles the next batch on the store's other connection before reading the answer; the
batch is published (and its offsets committed) only once the answer says it committed.
These tests run the real loop on a real server: every record delivered once, a COMMIT
that fails after the next batch started (a deferred constraint) redoes both batches
with nothing lost or doubled, and the last batch of a burst goes out without waiting
for the next poll's timeout.
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
    """Notes whether a poll ever started with a batch in flight; stops the loop when done."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.stop = threading.Event()
        self.next: dict[Any, int] = {}
        self.polled_in_flight = 0

    def before_poll(self, worker: Any) -> None:
        self.polled_in_flight += worker.delivery.in_flight

    def after_commit(self, worker: Any, offsets: dict[Any, int]) -> None:
        self.next.update(offsets)
        if sum(self.next.values()) >= self.total:
            self.stop.set()


class _AtPoll(_Watch):
    """Also notes, as each poll returns, how many records are published and committed."""

    def __init__(self, total: int, bus: MemoryBus) -> None:
        super().__init__(total)
        self.bus = bus
        self.at_poll: list[tuple[int, int]] = []

    def after_poll(self, worker: Any, records: Any) -> None:
        committed = sum(self.bus.committed(worker.group_id).values())
        self.at_poll.append((len(self.bus.records(RESERVED)), committed))


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


def test_the_loop_delivers_every_batch_once_with_commits_in_flight(store: PostgresStore) -> None:
    """600 orders in batches of 50: the loop polled with a COMMIT in flight, and every
    order has one reservation row, one output and its offset committed."""
    bus = MemoryBus()
    ids = [f"o{i}" for i in range(600)]
    _orders(bus, ids)
    service, calls = _inventory()
    watch = _Watch(len(ids))
    worker = _worker(service, bus, store, watch)
    _run(worker, watch, 60)
    assert watch.polled_in_flight > 0  # the overlap this loop is for happened
    assert len(_reserved(bus)) == 600 and set(_reserved(bus).values()) == {1}
    assert _rows(store) == sorted(ids)
    assert set(calls.values()) == {1}
    assert sum(bus.committed(worker.group_id).values()) == 600
    assert _outbox_rows(store) == 0  # every published record's row was deleted


def test_a_commit_failing_while_the_next_batch_runs_redoes_both(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch holding "boom" fails at COMMIT, found by the batch after it: both are
    handled again, and every order ends with one row and one output."""
    bus = MemoryBus()
    ids = [f"o{i}" for i in range(300)]
    ids[120] = "boom"  # in the third batch of 50: three batches come after it
    _orders(bus, ids)
    service, calls = _inventory(FAIL_ONCE_AT_COMMIT)
    watch = _Watch(len(ids))
    worker = _worker(service, bus, store, watch)
    _run(worker, watch, 60)
    assert len(_reserved(bus)) == 300 and set(_reserved(bus).values()) == {1}
    assert _rows(store) == sorted(ids)
    assert calls["boom"] == 2  # its batch was handled again after the failed COMMIT
    assert "boom at commit" in caplog.text
    with psycopg.connect(store._pool.conninfo) as conn:  # the trigger did fire
        trips = conn.execute(f'SELECT last_value FROM "{store.schema}".boom_trips').fetchone()
    assert trips is not None and trips[0] >= 1


def test_the_last_batch_of_a_burst_goes_out_before_the_next_poll_times_out(
    store: PostgresStore,
) -> None:
    """With a 30 s poll timeout the batch in flight is delivered at once when nothing
    more comes, not after the empty poll."""
    bus = MemoryBus()
    service, _ = _inventory()
    watch = _Watch(3)
    worker = _worker(service, bus, store, watch, poll_timeout=30.0)
    worker.run_once(0.0)  # joined, nothing yet
    thread = threading.Thread(target=worker.run, args=(watch.stop,), daemon=True)
    thread.start()
    started = time.monotonic()
    _orders(bus, ["a", "b", "c"])
    delivered = watch.stop.wait(20)
    waited = time.monotonic() - started
    thread.join(40)
    assert delivered, "the burst was not delivered within 20 s"
    assert waited < 20 and len(_reserved(bus)) == 3


def test_a_revocation_delivers_the_batch_in_flight_before_its_partitions_go(
    store: PostgresStore, postgres_url: str
) -> None:
    """A replica joins while the first one's batch waits for its COMMIT: the revocation
    publishes that batch and commits its offsets first, and every order ends once."""
    bus = MemoryBus(default_partitions=2)
    ids = [f"o{i}" for i in range(200)]
    _orders(bus, ids)
    service, _ = _inventory()
    watch = _AtPoll(len(ids), bus)
    first = _worker(service, bus, store, watch)
    first.start()
    blocker = psycopg.connect(postgres_url, options=f"-c search_path={store.schema}")
    blocker.execute("LOCK TABLE choreo_outbox IN SHARE MODE")  # the batch's COMMIT waits
    first._poll_once(0.0)  # one batch handled, its COMMIT sent behind
    assert first.delivery.in_flight
    assert bus.records(RESERVED) == []  # nothing published before the COMMIT's answer
    other_store = PostgresStore(postgres_url, schema=store.schema)
    try:
        second = _worker(service, bus, other_store, _Watch(len(ids)))
        second.start()  # joins: the group rebalances at the members' next polls
        # the answer is not there when the next poll starts, only during its revocation
        threading.Timer(1.0, blocker.rollback).start()
        first._poll_once(0.0)  # revokes: the batch in flight goes out first
        # when that poll returned (the revocation inside it), the batch was published
        # and its offsets committed, before any other batch was handled
        assert watch.at_poll[-1] == (50, 50)
        for _ in range(100):
            busy = first.run_once(0.0) + second.run_once(0.0)
            if not busy and len(bus.records(RESERVED)) == len(ids):
                break
        second.close()
    finally:
        other_store.close()
    first.close()
    blocker.close()
    assert len(_reserved(bus)) == 200 and set(_reserved(bus).values()) == {1}
    assert _rows(store) == sorted(ids)


def _outbox_rows(store: PostgresStore) -> int:
    with psycopg.connect(store._pool.conninfo) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{store.schema}".choreo_outbox').fetchone()
    return int(row[0]) if row is not None else -1


def test_a_batch_delivered_at_the_next_ones_delivery_has_its_outbox_row_deleted(
    store: PostgresStore, postgres_url: str
) -> None:
    """The batch in flight is published when the next batch is delivered (its answer
    came late): the ids that publication acknowledged were not staged in the next
    batch's transaction, so they must be deleted by a later one, not forgotten."""
    bus = MemoryBus()
    ids = [f"o{i}" for i in range(100)]
    _orders(bus, ids)
    service, _ = _inventory()
    watch = _Watch(len(ids))
    worker = _worker(service, bus, store, watch)
    worker.start()
    blocker = psycopg.connect(postgres_url, options=f"-c search_path={store.schema}")
    blocker.execute("LOCK TABLE choreo_outbox IN SHARE MODE")  # the batch's COMMIT waits
    try:
        worker._poll_once(0.0)  # the first batch: its COMMIT sent behind, not answered
        assert worker.delivery.in_flight
        threading.Timer(0.5, blocker.rollback).start()
        # the next poll's tick finds no answer; the second batch's ctx.db waits for it,
        # and its delivery publishes the first batch
        worker._poll_once(0.0)
        assert len(bus.records(RESERVED)) == 50
        while worker.run_once(0.0):
            pass
    finally:
        worker.close()
        blocker.close()
    assert len(_reserved(bus)) == 100 and set(_reserved(bus).values()) == {1}
    assert _outbox_rows(store) == 0  # every published record's row was deleted


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


def test_a_publisher_sharing_the_store_reading_the_answer_does_not_let_the_batch_out_early(
    store: PostgresStore, postgres_url: str
) -> None:
    """A Publisher on another thread shares the worker's store (its commit reads the
    answer of the worker's COMMIT sent behind): while that thread waits for the answer,
    the worker's delivery must wait too, not take the COMMIT as answered and publish."""
    bus = MemoryBus()
    _orders(bus, [f"o{i}" for i in range(50)])
    service, _ = _inventory()
    watch = _Watch(50)
    worker = _worker(service, bus, store, watch)
    worker.start()
    blocker = psycopg.connect(postgres_url, options=f"-c search_path={store.schema}")
    blocker.execute("LOCK TABLE choreo_outbox IN SHARE MODE")  # the batch's COMMIT waits
    shop = build_shop()
    publisher = Publisher(shop.orders, MemoryTransport(bus), avro_serde(), inbox=store)
    released = threading.Event()

    def release() -> None:
        released.set()
        blocker.rollback()

    try:
        worker._poll_once(0.0)  # the batch's COMMIT sent behind, not answered
        assert worker.delivery.in_flight
        starting = threading.Thread(
            target=publisher.start, args=(shop.saga, OrderPlaced("p1", "book", 1, 100))
        )
        starting.start()  # its commit reads the worker's answer first: it waits
        time.sleep(0.5)
        threading.Timer(1.0, release).start()
        worker.delivery.finish()
        published_early = not released.is_set()
        starting.join(30)
    finally:
        publisher.close()
        worker.close()
        blocker.close()
    assert not published_early, "the batch was published before its COMMIT was answered"
    assert len(_reserved(bus)) == 50
