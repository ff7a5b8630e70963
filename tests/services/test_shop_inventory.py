"""The inventory service: reservations, releases and their idempotency, through its handlers too."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from choreo import StepKind
from services import events as ev
from services.config import ServiceConfig
from services.inventory import Stock, create
from services.store import Undo


@pytest.fixture
def stock() -> Stock:
    """Return a store with 10 mugs and 2 kettles."""
    return Stock(stock={"mug": 10, "kettle": 2})


def movements(conn: sqlite3.Connection, order_id: str) -> list[tuple[str, int]]:
    """Return (sku, delta) of every stock movement of ``order_id``."""
    return conn.execute(
        "SELECT sku, delta FROM inventory_movements WHERE order_id = ? ORDER BY id", (order_id,)
    ).fetchall()


def test_reserve_takes_every_line_from_stock(stock: Stock) -> None:
    """A reservation decrements each article and logs one movement per article."""
    with stock.transaction() as conn:
        outcome = stock.reserve(conn, "o-1", [("mug", 3), ("kettle", 1), ("mug", 1)], "e-1")
        assert outcome.reserved and outcome.reservation_id == "res-o-1"
        assert stock.available(conn, "mug") == 6
        assert stock.available(conn, "kettle") == 1
        assert sorted(movements(conn, "o-1")) == [("kettle", -1), ("mug", -4)]


def test_reserve_is_idempotent(stock: Stock) -> None:
    """Reserving the same order again returns the first outcome and takes nothing more."""
    with stock.transaction() as conn:
        first = stock.reserve(conn, "o-1", [("mug", 4)], "e-1")
        again = stock.reserve(conn, "o-1", [("mug", 4)], "e-2")
        assert again == first
        assert stock.available(conn, "mug") == 6
        assert len(movements(conn, "o-1")) == 1


def test_out_of_stock_reserves_nothing(stock: Stock) -> None:
    """When one line is short the whole order is rejected and no stock moves."""
    with stock.transaction() as conn:
        outcome = stock.reserve(conn, "o-1", [("mug", 1), ("kettle", 3)], "e-1")
        assert outcome.status == "rejected"
        assert outcome.reason is not None and "out of stock" in outcome.reason
        assert stock.available(conn, "mug") == 10
        assert movements(conn, "o-1") == []


@pytest.mark.parametrize(
    ("lines", "reason"),
    [([("teapot", 1)], "unknown article"), ([("mug", 0)], "invalid quantity"), ([], "no lines")],
)
def test_invalid_orders_are_rejected(
    stock: Stock, lines: list[tuple[str, int]], reason: str
) -> None:
    """Unknown articles, non-positive quantities and empty orders are rejected with a reason."""
    with stock.transaction() as conn:
        outcome = stock.reserve(conn, "o-1", lines, "e-1")
    assert outcome.status == "rejected"
    assert outcome.reason is not None and reason in outcome.reason


def test_release_puts_stock_back_once(stock: Stock) -> None:
    """Release restores the stock; the same trigger again is DONE, another trigger ALREADY."""
    with stock.transaction() as conn:
        stock.reserve(conn, "o-1", [("kettle", 2)], "e-1")
        assert stock.available(conn, "kettle") == 0
        assert stock.release(conn, "o-1", "c-1") is Undo.DONE
        assert stock.available(conn, "kettle") == 2
        assert stock.release(conn, "o-1", "c-1") is Undo.DONE
        assert stock.release(conn, "o-1", "c-2") is Undo.ALREADY
        assert stock.available(conn, "kettle") == 2
        assert movements(conn, "o-1") == [("kettle", -2), ("kettle", 2)]


def test_release_without_reservation_finds_nothing(stock: Stock) -> None:
    """Releasing an unknown or rejected order changes nothing."""
    with stock.transaction() as conn:
        assert stock.release(conn, "o-unknown", "c-1") is Undo.NOTHING
        stock.reserve(conn, "o-2", [("kettle", 5)], "e-1")
        assert stock.release(conn, "o-2", "c-1") is Undo.NOTHING
        assert stock.available(conn, "kettle") == 2


def test_store_writes_through_the_runtime_connection_without_committing(
    db: sqlite3.Connection,
) -> None:
    """Given ctx.db, the store writes there, never commits, and survives the runtime's rollback."""
    stock = Stock(stock={"mug": 5})
    db.execute("BEGIN")
    with stock.transaction(db) as conn:
        assert conn is db
        stock.reserve(conn, "o-1", [("mug", 2)], "e-1")
    assert db.in_transaction
    db.execute("ROLLBACK")
    with stock.transaction(db) as conn:
        assert stock.available(conn, "mug") == 5
        assert conn.execute("SELECT COUNT(*) FROM inventory_reservations").fetchone() == (0,)


def test_declarations() -> None:
    """reserve is a compensatable step; release undoes it on declines, refunds and timeouts."""
    service = create(ServiceConfig())
    kinds = {spec.name: spec for spec in service.handlers}
    assert kinds["reserve"].kind is StepKind.COMPENSATABLE
    assert kinds["reserve"].fails_with == (ev.InventoryReservationFailed,)
    assert kinds["release"].undoes == "inventory.reserve"
    assert set(kinds["release"].consumed_types) == {
        "shop.payments.PaymentDeclined",
        "shop.payments.PaymentRefunded",
        "choreo.SagaTimedOut",
    }


def _order(order_id: str, *lines: tuple[str, int]) -> ev.OrderCreated:
    return ev.OrderCreated(
        order_id=order_id,
        customer_id="c-1",
        items=[ev.LineItem(sku=s, quantity=q, unit_price_cents=100) for s, q in lines],
        total_cents=100 * sum(q for _, q in lines),
        currency="EUR",
        created_at=0,
    )


def test_handlers_reserve_and_release(make_ctx: Any, handler: Any, db: sqlite3.Connection) -> None:
    """The handlers emit InventoryReserved, then InventoryReleased on a decline."""
    stock = Stock(stock={"mug": 3})
    service = create(ServiceConfig(), stock=stock)
    reserve, release = handler(service, "reserve"), handler(service, "release")
    reserved = reserve(_order("o-1", ("mug", 2)), make_ctx("o-1", db=db))
    assert isinstance(reserved, ev.InventoryReserved)
    assert [(i.sku, i.quantity) for i in reserved.items] == [("mug", 2)]
    failed = reserve(_order("o-2", ("mug", 2)), make_ctx("o-2", db=db))
    assert isinstance(failed, ev.InventoryReservationFailed)
    released = release(ev.PaymentDeclined(order_id="o-1", reason="no"), make_ctx("o-1", db=db))
    assert released == ev.InventoryReleased(order_id="o-1")
    assert stock.available(db, "mug") == 3


def test_release_on_timeout_only_where_the_saga_stopped(
    make_ctx: Any, handler: Any, timed_out: Any, db: sqlite3.Connection
) -> None:
    """A timeout awaiting the charge releases; one awaiting another step leaves the stock."""
    stock = Stock(stock={"mug": 3})
    service = create(ServiceConfig(), stock=stock)
    reserve, release = handler(service, "reserve"), handler(service, "release")
    reserve(_order("o-1", ("mug", 1)), make_ctx("o-1", db=db))
    assert release(timed_out("o-1", "shipping.create_shipment"), make_ctx("o-1", db=db)) is None
    assert stock.available(db, "mug") == 2
    out = release(timed_out("o-1", "payment.charge"), make_ctx("o-1", db=db))
    assert out == ev.InventoryReleased(order_id="o-1")
    assert stock.available(db, "mug") == 3
    assert release(timed_out("o-9", "payment.charge"), make_ctx("o-9", db=db)) is None


def test_a_later_trigger_does_not_release_twice(make_ctx: Any, handler: Any) -> None:
    """After a timeout released the stock, the refund arriving later emits nothing more."""
    stock = Stock(stock={"mug": 3})
    service = create(ServiceConfig(), stock=stock)
    reserve, release = handler(service, "reserve"), handler(service, "release")
    reserve(_order("o-1", ("mug", 1)), make_ctx("o-1"))
    assert release(ev.PaymentDeclined(order_id="o-1", reason="x"), make_ctx("o-1")) is not None
    assert release(ev.PaymentRefunded(order_id="o-1"), make_ctx("o-1")) is None
    assert stock.query("SELECT available FROM inventory_stock WHERE sku = 'mug'") == [(3,)]


def test_silent_reserve_drops_the_event(make_ctx: Any, handler: Any) -> None:
    """With inventory.reserve silent, the handler emits nothing and reserves nothing."""
    stock = Stock(stock={"mug": 3})
    config = ServiceConfig(silent_step="inventory.reserve", silent_rate=1.0)
    reserve = handler(create(config, stock=stock), "reserve")
    assert reserve(_order("o-1", ("mug", 1)), make_ctx("o-1")) is None
    assert stock.query("SELECT COUNT(*) FROM inventory_reservations") == [(0,)]
