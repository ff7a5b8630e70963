"""The test kit as production runs: ctx.db on a real store, virtual time, the tracker's view.

Given a service's state, when a saga starts (and time passes), expect its events, its
status in the tracker and a clean bill from ``verify``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from runtime.fixtures.events import (
    OrderCompleted,
    OrderFailed,
    OrderPlaced,
    PaymentAuthorized,
    PaymentVoided,
    ShipmentFailed,
    StockReleased,
    StockReserved,
    StockUnavailable,
)
from runtime.fixtures.shop import SCHEMAS_DIR, build_shop

from choreo import Context, Saga, SagaTimedOut, Service, SqliteStore, Tracker
from choreo.errors import ConfigurationError
from choreo.runtime import Publisher, Worker
from choreo.runtime.serdes import serde_for
from choreo.store import Migration
from choreo.testing import PublishedRecord, SagaTestKit
from choreo.testing.recording import RecordingTransport
from choreo.tracker import SagaState, SagaStatus, SagaTrace, verify_records
from choreo.transports.memory import MemoryBus, MemoryTransport

STOCK = Migration(1, "stock", ["CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INT NOT NULL)"])


def stock_saga(*, deadline: float | None = None, silent_payment: bool = False) -> list[Service]:
    """orders -> inventory.reserve (its stock table, through ctx.db) -> payment -> completed."""
    saga = Saga("Stock", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed,
                deadline=deadline)  # fmt: skip
    orders = Service("orders", sagas=[saga])
    inventory = Service("inventory", sagas=[saga], migrations=[STOCK])
    payment = Service("payment", sagas=[saga])
    orders.starts(saga)

    @inventory.step(on=OrderPlaced, emits=StockReserved, fails_with=StockUnavailable)
    def reserve(event: OrderPlaced, ctx: Context) -> StockReserved | StockUnavailable:
        row = ctx.db.execute("SELECT qty FROM stock WHERE sku = ?", (event.sku,)).fetchone()
        if row is None or row[0] < event.quantity:
            return StockUnavailable(event.order_id, f"no {event.sku} left")
        ctx.db.execute("UPDATE stock SET qty = qty - ? WHERE sku = ?", (event.quantity, event.sku))
        return StockReserved(event.order_id, event.sku, event.quantity)

    @inventory.compensation(undoes=reserve, on=SagaTimedOut, emits=StockReleased)
    def release(event: SagaTimedOut, ctx: Context) -> StockReleased:
        ctx.db.execute("UPDATE stock SET qty = qty + 1 WHERE sku = 'book'")
        return StockReleased(event.correlation_id)

    @payment.pivot(on=StockReserved, emits=PaymentAuthorized)
    def authorize(event: StockReserved) -> PaymentAuthorized | None:
        return None if silent_payment else PaymentAuthorized(event.order_id, 100)

    @orders.retriable(on=PaymentAuthorized, emits=OrderCompleted)
    def complete(event: PaymentAuthorized) -> OrderCompleted:
        return OrderCompleted(event.order_id)

    @orders.compensation(undoes=saga, on=[StockUnavailable, StockReleased], emits=OrderFailed)
    def reject(event: StockUnavailable | StockReleased) -> OrderFailed:
        return OrderFailed(event.order_id, "rolled back")

    return [orders, inventory, payment]


def order(order_id: str, quantity: int = 1) -> OrderPlaced:
    return OrderPlaced(order_id, "book", quantity, 100 * quantity)


# --- ctx.db ---------------------------------------------------------------------------------


def test_handlers_get_a_sqlite_store_and_given_when_expect_reads_like_the_saga() -> None:
    """given stock, when two orders come, expect one completed and one out of stock."""
    orders, inventory, payment = stock_saga()
    with SagaTestKit([orders, inventory, payment], schemas_dir=SCHEMAS_DIR) as kit:
        assert isinstance(kit.store(inventory), SqliteStore)
        kit.given(inventory, "INSERT INTO stock VALUES (?, ?)", ("book", 1))
        first = kit.when(orders.started_sagas[0], order("o-1"), correlation_id="o-1")
        second = kit.when(orders.started_sagas[0], order("o-2"), correlation_id="o-2")
        trace = kit.expect(
            first, [OrderPlaced, StockReserved, PaymentAuthorized, OrderCompleted],
            status="Completed",
        )  # fmt: skip
        assert trace.state is SagaState.COMPLETED and len(trace.events) == 4
        kit.expect(second, [OrderPlaced, StockUnavailable, OrderFailed], status=SagaStatus.FAILED)
        assert kit.query(inventory, "SELECT qty FROM stock WHERE sku = ?", ("book",)) == [(0,)]


def test_given_takes_a_function_of_the_connection() -> None:
    """given(service, fn) runs fn(ctx.db's connection) in one committed transaction."""
    orders, inventory, payment = stock_saga()
    with SagaTestKit([orders, inventory, payment], schemas_dir=SCHEMAS_DIR) as kit:
        kit.given(inventory, lambda db: db.executemany(
            "INSERT INTO stock VALUES (?, ?)", [("book", 5), ("lamp", 2)]))  # fmt: skip
        with pytest.raises(RuntimeError, match="half done"):
            kit.given(inventory, empty_then_fail)
        assert kit.query(inventory, "SELECT count(*) FROM stock") == [(2,)]  # rolled back


def empty_then_fail(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM stock")
    raise RuntimeError("half done")


def test_a_handler_behaves_the_same_under_the_kit_and_on_production_workers(
    tmp_path: Path,
) -> None:
    """The same services on plain workers with SQLite files give the same events and state."""
    services = stock_saga()
    with SagaTestKit(services, schemas_dir=SCHEMAS_DIR) as kit:
        kit.given(services[1], "INSERT INTO stock VALUES ('book', 1)")
        for cid in ("o-1", "o-2"):
            kit.when(services[0].started_sagas[0], order(cid), correlation_id=cid)
        under_kit = [kit.event_types(cid) for cid in ("o-1", "o-2")]
        kit_stock = kit.query(services[1], "SELECT sku, qty FROM stock")

    services = stock_saga()  # the same declarations, run as ``choreo run`` runs them
    serde = serde_for(services, schemas_dir=SCHEMAS_DIR)
    log: list[PublishedRecord] = []
    transport = RecordingTransport(MemoryTransport(MemoryBus()), log)
    stores = {s.name: SqliteStore(tmp_path / f"{s.name}.db") for s in services}
    workers = [Worker(s, transport, serde, inbox=stores[s.name]) for s in services]
    stores["inventory"].migrate("service:inventory", [STOCK])
    stores["inventory"].connection.execute("INSERT INTO stock VALUES ('book', 1)")
    publisher = Publisher(services[0], transport, serde, inbox=stores["orders"])
    for cid in ("o-1", "o-2"):
        publisher.start(services[0].started_sagas[0], order(cid), correlation_id=cid)
    while sum(w.run_once(0.0) for w in workers):
        pass
    tracker = Tracker()
    tracker.feed_many(log)
    on_workers = [[e.event_type for e in _trace(tracker, cid).events] for cid in ("o-1", "o-2")]
    rows = stores["inventory"].connection.execute("SELECT sku, qty FROM stock").fetchall()
    publisher.close()
    for worker in workers:
        worker.close()
    for store in stores.values():
        store.close()
    assert (on_workers, rows) == (under_kit, kit_stock)


def _trace(tracker: Tracker, cid: str) -> SagaTrace:
    trace = tracker.get(cid)
    assert trace is not None
    return trace


def test_stores_of_your_own_are_used_and_left_open(tmp_path: Path) -> None:
    """stores= gives a service your store (a file here); the kit does not close it."""
    orders, inventory, payment = stock_saga()
    mine = SqliteStore(tmp_path / "inventory.db")
    with SagaTestKit([orders, inventory, payment], schemas_dir=SCHEMAS_DIR,
                     stores={"inventory": mine}) as kit:  # fmt: skip
        assert kit.store(inventory) is mine and kit.store("orders") is not mine
        kit.given(inventory, "INSERT INTO stock VALUES ('book', 3)")
        kit.when(orders.started_sagas[0], order("o-1"), correlation_id="o-1")
    assert mine.connection.execute("SELECT qty FROM stock").fetchall() == [(2,)]
    mine.close()
    with pytest.raises(ConfigurationError, match="names nobody"):
        SagaTestKit([orders], schemas_dir=SCHEMAS_DIR, stores={"nobody": mine})


# --- virtual time ---------------------------------------------------------------------------


def test_events_are_stamped_with_virtual_time_a_millisecond_per_batch() -> None:
    """From start_ms, each batch a worker handles takes one virtual millisecond."""
    services = stock_saga()
    with SagaTestKit(services, schemas_dir=SCHEMAS_DIR, start_ms=1_000_000) as kit:
        kit.given(services[1], "INSERT INTO stock VALUES ('book', 1)")
        cid = kit.when(services[0].started_sagas[0], order("o-1"), correlation_id="o-1")
        stamps = [e.envelope.produced_at_ms for e in kit.events(cid)]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert stamps[0] == 1_000_000 and stamps[-1] < 1_000_100
        kit.advance(3600)
        assert kit.clock_ms() >= 1_000_000 + 3_600_000


def test_a_silent_step_makes_the_saga_stuck_when_its_deadline_passes() -> None:
    """Stuck exactly after the saga's deadline on the virtual clock, however slow the test."""
    services = stock_saga(deadline=10, silent_payment=True)
    with SagaTestKit(services, schemas_dir=SCHEMAS_DIR) as kit:
        kit.given(services[1], "INSERT INTO stock VALUES ('book', 1)")
        cid = kit.when(services[0].started_sagas[0], order("o-1"), correlation_id="o-1")
        kit.advance(9.9)
        trace = kit.expect(cid, [OrderPlaced, StockReserved], status="Pending")
        assert trace.deadline_ms == trace.events[-1].produced_at_ms + 10_000
        kit.advance(0.2)
        kit.expect(cid, status="Stuck")
        assert [t.correlation_id for t in kit.tracker().sagas(stuck_only=True)] == [cid]


def test_with_timeouts_an_overdue_saga_times_out_and_compensates() -> None:
    """timeouts=True: the tracker's SagaTimedOut fails the saga; the reservation is undone."""
    services = stock_saga(deadline=10, silent_payment=True)
    with SagaTestKit(services, schemas_dir=SCHEMAS_DIR, timeouts=True) as kit:
        kit.given(services[1], "INSERT INTO stock VALUES ('book', 1)")
        cid = kit.when(services[0].started_sagas[0], order("o-1"), correlation_id="o-1")
        assert kit.advance(5) == 0
        kit.advance(6)
        trace = kit.expect(
            cid, [OrderPlaced, StockReserved, SagaTimedOut, StockReleased, OrderFailed],
            status="Failed",
        )  # fmt: skip
        assert trace.timed_out
        assert kit.query(services[1], "SELECT qty FROM stock") == [(1,)]
        assert kit.verify().ok


# --- the tracker ----------------------------------------------------------------------------


def test_the_kit_records_feed_a_tracker_as_they_are() -> None:
    """kit.published are Records (partition 0, offset = position): any tracker reads them."""
    shop = build_shop()
    with SagaTestKit(shop.services, schemas_dir=SCHEMAS_DIR) as kit:
        ok = kit.when(shop.saga, OrderPlaced("o1", "book", 1, 100))
        assert [r.offset for r in kit.published] == list(range(len(kit.published)))
        mine = Tracker()
        assert mine.feed_many(kit.published) == len(kit.published)
        ours = kit.tracker().get(ok)
        assert ours is not None and ours == mine.get(ok)
        assert [e.event_type for e in ours.events] == kit.event_types(ok)
        report = verify_records(kit.published)
        assert report.ok and report.sagas == 1


def test_compensations_in_the_wrong_order_are_found_by_verify_and_expect() -> None:
    """A choreography undoing inventory before payment passes its run, not the tracker."""
    saga = Saga("Wrong", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    orders, inventory, payment, shipping = (
        Service(name, sagas=[saga]) for name in ("orders", "inventory", "payment", "shipping")
    )
    orders.starts(saga)

    @inventory.step(on=OrderPlaced, emits=StockReserved)
    def reserve(event: OrderPlaced) -> StockReserved:
        return StockReserved(event.order_id, event.sku, event.quantity)

    @payment.step(on=StockReserved, emits=PaymentAuthorized)
    def authorize(event: StockReserved) -> PaymentAuthorized:
        return PaymentAuthorized(event.order_id, 100)

    @shipping.pivot(on=PaymentAuthorized, emits=OrderCompleted, fails_with=ShipmentFailed)
    def ship(event: PaymentAuthorized) -> ShipmentFailed:
        return ShipmentFailed(event.order_id, "no truck")

    @inventory.compensation(undoes=reserve, on=ShipmentFailed, emits=StockReleased)
    def release(event: ShipmentFailed) -> StockReleased:  # first: the wrong order
        return StockReleased(event.order_id)

    @payment.compensation(undoes=authorize, on=StockReleased, emits=PaymentVoided)
    def void(event: StockReleased) -> PaymentVoided:
        return PaymentVoided(event.order_id)

    @orders.compensation(undoes=saga, on=PaymentVoided, emits=OrderFailed)
    def reject(event: PaymentVoided) -> OrderFailed:
        return OrderFailed(event.order_id, "rolled back")

    with SagaTestKit([orders, inventory, payment, shipping], schemas_dir=SCHEMAS_DIR) as kit:
        cid = kit.when(saga, OrderPlaced("o1", "book", 1, 100))
        kit.assert_failed(cid)  # the events alone look fine
        report = kit.verify()
        assert not report.ok
        assert {f.violation.code for f in report.findings} == {"compensation-order"}
        with pytest.raises(
            AssertionError, match=r"breaks the saga guarantee:\n.*compensation-order"
        ):
            kit.expect(cid, status="Failed")
        trace = kit.expect(cid, status="Violated")
        assert trace.violations


def test_expect_says_what_differs_with_the_timeline() -> None:
    """A wrong event list or status fails with both and the saga's events."""
    shop = build_shop()
    with SagaTestKit(shop.services, schemas_dir=SCHEMAS_DIR) as kit:
        cid = kit.when(shop.saga, OrderPlaced("o1", "book", 1, 100))
        with pytest.raises(AssertionError, match=r"(?s)expected the events.*saw:.*StockReserved"):
            kit.expect(cid, [OrderPlaced, OrderCompleted])
        with pytest.raises(
            AssertionError, match="expected status Failed, the tracker says Completed"
        ):
            kit.expect(cid, status="Failed")
        with pytest.raises(AssertionError, match="saw no event of saga nope"):
            kit.expect("nope")


def test_advance_refuses_to_go_back() -> None:
    """Virtual time only moves forward."""
    with (
        SagaTestKit(stock_saga(), schemas_dir=SCHEMAS_DIR) as kit,
        pytest.raises(ConfigurationError, match="only moves forward"),
    ):
        kit.advance(-1)
