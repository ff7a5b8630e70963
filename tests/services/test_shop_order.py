"""The order service: placing orders with their start event, completing and rejecting them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from choreo import StepKind
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Publisher, SqliteInbox
from choreo.runtime.serdes import serde_for
from choreo.transports.memory import MemoryBus, MemoryTransport
from services import events as ev
from services.catalog import OrderLine, OrderRequest, sample_orders
from services.config import ServiceConfig
from services.order import Orders, create, order_created, place_order
from services.store import Undo

REPO = Path(__file__).resolve().parents[2]


def _request(order_id: str = "o-1") -> OrderRequest:
    return OrderRequest(
        order_id, "c-1", (OrderLine("mug", 2, 1_200), OrderLine("kettle", 1, 4_500))
    )


def test_order_created_mirrors_the_request() -> None:
    """The start event carries the order's lines and total."""
    event = order_created(_request())
    assert event.order_id == "o-1" and event.total_cents == 6_900
    assert [(i.sku, i.quantity, i.unit_price_cents) for i in event.items] == [
        ("mug", 2, 1_200),
        ("kettle", 1, 4_500),
    ]


def test_place_complete_and_reject() -> None:
    """An order is pending, then completed; a completed order cannot be rejected."""
    orders = Orders()
    with orders.transaction() as conn:
        assert orders.place(conn, _request("o-1"))
        assert not orders.place(conn, _request("o-1"))
        assert orders.status(conn, "o-1") == "pending"
        assert orders.complete(conn, "o-1", "e-1") == "completed"
        assert orders.reject(conn, "o-1", "late", "e-2") is Undo.NOTHING
        assert orders.status(conn, "o-1") == "completed"


def test_reject_once() -> None:
    """Rejecting is DONE once (and for the same trigger), ALREADY for another trigger."""
    orders = Orders()
    with orders.transaction() as conn:
        orders.place(conn, _request("o-1"))
        assert orders.reject(conn, "o-1", "declined", "e-1") is Undo.DONE
        assert orders.reject(conn, "o-1", "declined", "e-1") is Undo.DONE
        assert orders.reject(conn, "o-1", "declined", "e-2") is Undo.ALREADY
        assert orders.complete(conn, "o-1", "e-3") == "failed"
        assert orders.reject(conn, "o-unknown", "x", "e-4") is Undo.NOTHING


def test_place_order_commits_the_row_with_the_start_event(tmp_path: Path) -> None:
    """place_order stores the order and publishes OrderCreated keyed by the order id."""
    shop_config = ServiceConfig()
    orders = Orders()
    service = create(shop_config, orders=orders)
    bus = MemoryBus()
    serde = serde_for([service], schemas_dir=REPO / "schemas")
    inbox = SqliteInbox(tmp_path / "order.sqlite3")
    publisher = Publisher(service, MemoryTransport(bus), serde, inbox=inbox)
    try:
        cid = place_order(publisher, orders, _request("o-7"))
    finally:
        publisher.close()
        inbox.close()
    assert cid == "o-7"
    with sqlite3.connect(tmp_path / "order.sqlite3") as conn:
        assert conn.execute("SELECT status, total_cents FROM orders").fetchall() == [
            ("pending", 6_900)
        ]
    consumer = MemoryTransport(bus).consumer("check")
    consumer.subscribe(["shop.orders.OrderCreated"])
    records = consumer.poll(10, timeout=1.0)
    assert [r.key for r in records] == [b"o-7"]
    headers = headers_to_dict(records[0].headers)
    assert headers[Header.CORRELATION_ID] == b"o-7"
    assert headers[Header.ROLE] == b"start"
    decoded = serde.decode("shop.orders.OrderCreated", records[0].value or b"")
    assert isinstance(decoded, ev.OrderCreated)
    assert (decoded.order_id, decoded.total_cents, len(decoded.items)) == ("o-7", 6_900, 2)


def test_complete_and_reject_handlers(make_ctx: Any, handler: Any, timed_out: Any) -> None:
    """complete emits OrderCompleted; reject emits OrderFailed with the upstream reason once."""
    orders = Orders()
    service = create(ServiceConfig(), orders=orders)
    complete, reject = handler(service, "complete"), handler(service, "reject")
    with orders.transaction() as conn:
        for order_id in ("o-1", "o-2", "o-3"):
            orders.place(conn, _request(order_id))
    done = complete(ev.ShipmentDispatched(order_id="o-1", tracking_number="T"), make_ctx("o-1"))
    assert done == ev.OrderCompleted(order_id="o-1")
    failed = reject(
        ev.InventoryReservationFailed(order_id="o-2", reason="out of stock"), make_ctx("o-2")
    )
    assert failed == ev.OrderFailed(order_id="o-2", reason="out of stock")
    assert reject(ev.InventoryReleased(order_id="o-2"), make_ctx("o-2")) is None
    assert reject(timed_out("o-3", "payment.charge"), make_ctx("o-3")) is None
    out = reject(timed_out("o-3", "inventory.reserve"), make_ctx("o-3"))
    assert isinstance(out, ev.OrderFailed) and "timed out" in out.reason
    assert orders.query("SELECT order_id, status FROM orders ORDER BY order_id") == [
        ("o-1", "completed"),
        ("o-2", "failed"),
        ("o-3", "failed"),
    ]


def test_completion_of_an_order_failed_by_timeout_emits_nothing(
    make_ctx: Any, handler: Any
) -> None:
    """A parcel dispatched after the order failed does not complete it."""
    orders = Orders()
    service = create(ServiceConfig(), orders=orders)
    with orders.transaction() as conn:
        orders.place(conn, _request("o-1"))
        orders.reject(conn, "o-1", "timed out", "t-1")
    complete = handler(service, "complete")
    assert (
        complete(ev.ShipmentDispatched(order_id="o-1", tracking_number="T"), make_ctx("o-1"))
        is None
    )


def test_unknown_orders_still_end(make_ctx: Any, handler: Any) -> None:
    """A saga started elsewhere (no order row) still completes or fails."""
    service = create(ServiceConfig(), orders=Orders())
    complete, reject = handler(service, "complete"), handler(service, "reject")
    assert complete(ev.ShipmentDispatched(order_id="x", tracking_number="T"), make_ctx("x")) == (
        ev.OrderCompleted(order_id="x")
    )
    assert isinstance(reject(ev.InventoryReleased(order_id="y"), make_ctx("y")), ev.OrderFailed)


def test_declarations_and_sample_orders() -> None:
    """order starts the saga, complete is retriable, reject undoes the start; samples repeat."""
    service = create(ServiceConfig())
    specs = {s.name: s for s in service.handlers}
    assert [s.name for s in service.started_sagas] == [
        "OrderFulfillment",
        "OrderFulfillmentOrchestrated",
    ]
    assert specs["complete"].kind is StepKind.RETRIABLE
    assert specs["reject"].undoes == "order.start"
    assert specs["complete_command"].kind is StepKind.RETRIABLE  # the orchestrated saga's
    assert specs["reject_command"].undoes == "order.start"
    assert sample_orders(20, seed=3) == sample_orders(20, seed=3)
    assert sample_orders(20, seed=3) != sample_orders(20, seed=4)
    assert len({o.order_id for o in sample_orders(500, seed=1)}) == 500
