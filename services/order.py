"""The order service: opens the saga when an order is placed, and closes it.

State (its own table in the service's store): one order per order id, ``pending`` until
the saga ends ``completed`` or ``failed``. :func:`place_order` stores the order and its
``OrderCreated`` start event in one local transaction (through the
:class:`~choreo.runtime.Publisher`'s outbox); ``complete`` (retriable, after the pivot)
and ``reject`` (the compensation of the saga's start) end it. The order id is the saga's
correlation id.
"""

from __future__ import annotations

from typing import Any

from choreo import Context, Event, Publisher, Service
from choreo.model.envelope import now_ms as epoch_ms
from choreo.store import execute
from services import events as ev
from services.catalog import OrderRequest
from services.config import ServiceConfig
from services.saga import (
    OrderFulfillment,
    OrderFulfillmentOrchestrated,
    TimedOut,
    order_id_of,
    timed_out_after,
)
from services.store import Store, Undo, now_ms

__all__ = [
    "Orders",
    "create",
    "order_created",
    "order_submitted",
    "place_order",
    "service",
]


class Orders(Store):
    """The orders of the order service and how each one ended."""

    SERVICE = "order"
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS orders (
            order_id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            total_cents INTEGER NOT NULL,
            currency TEXT NOT NULL,
            lines INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
            reason TEXT,
            ended_by TEXT,
            created_ms BIGINT NOT NULL,
            ended_ms BIGINT)""",
    )

    def place(self, conn: Any, request: OrderRequest) -> bool:
        """Store a new pending order; return False when the order id is taken already."""
        cursor = execute(
            conn,
            "INSERT INTO orders"
            " (order_id, customer_id, total_cents, currency, lines, status, created_ms)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (order_id) DO NOTHING",
            (
                request.order_id,
                request.customer_id,
                request.total_cents,
                request.currency,
                len(request.lines),
                now_ms(),
            ),
        )
        return bool(cursor.rowcount == 1)

    def status(self, conn: Any, order_id: str) -> str | None:
        """Return ``order_id``'s status, or None for an order this service never stored."""
        row = execute(conn, "SELECT status FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else str(row[0])

    def complete(self, conn: Any, order_id: str, cause: str) -> str | None:
        """Mark a pending order completed; return its status afterwards (None: unknown order).

        A failed order stays failed (it timed out before the parcel left): the caller
        decides what to tell.
        """
        execute(
            conn,
            "UPDATE orders SET status = 'completed', ended_by = ?, ended_ms = ?"
            " WHERE order_id = ? AND status = 'pending'",
            (cause, now_ms(), order_id),
        )
        return self.status(conn, order_id)

    def reject(self, conn: Any, order_id: str, reason: str, cause: str) -> Undo:
        """Mark a pending order failed once and say what was found.

        An unknown or completed order has nothing to undo (``NOTHING``).
        """
        failed = execute(
            conn,
            "UPDATE orders SET status = 'failed', reason = ?, ended_by = ?, ended_ms = ?"
            " WHERE order_id = ? AND status = 'pending'",
            (reason, cause, now_ms(), order_id),
        ).rowcount
        if failed == 1:
            return Undo.DONE
        row = execute(
            conn, "SELECT status, ended_by FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()
        if row is None or row[0] == "completed":
            return Undo.NOTHING
        return Undo.DONE if row[1] == cause else Undo.ALREADY


def order_created(request: OrderRequest) -> ev.OrderCreated:
    """Return the ``OrderCreated`` event announcing ``request``."""
    return ev.OrderCreated(
        order_id=request.order_id,
        customer_id=request.customer_id,
        items=[
            ev.LineItem(
                sku=line.sku, quantity=line.quantity, unit_price_cents=line.unit_price_cents
            )
            for line in request.lines
        ],
        total_cents=request.total_cents,
        currency=request.currency,
        created_at=epoch_ms(),
    )


def order_submitted(request: OrderRequest) -> ev.OrderSubmitted:
    """Return the ``OrderSubmitted`` event opening the orchestrated saga for ``request``."""
    created = order_created(request)
    return ev.OrderSubmitted(
        order_id=created.order_id,
        customer_id=created.customer_id,
        items=created.items,
        total_cents=created.total_cents,
        currency=created.currency,
        created_at=created.created_at,
    )


def place_order(
    starter: Publisher, orders: Orders, request: OrderRequest, *, orchestrated: bool = False
) -> str:
    """Store ``request`` as a pending order and start its saga in one local transaction.

    ``starter`` is a :class:`~choreo.runtime.Publisher` of the order service; with a
    :class:`~choreo.runtime.SqliteInbox` the order row and the start event commit together.
    ``orchestrated`` opens the orchestrated saga (``OrderSubmitted``) instead of the
    choreographed one (``OrderCreated``). Returns the saga's correlation id (the order id).
    """

    def store_order(db: Any) -> None:
        with orders.transaction(db) as conn:
            orders.place(conn, request)

    if orchestrated:
        return starter.start(
            OrderFulfillmentOrchestrated,
            order_submitted(request),
            correlation_id=request.order_id,
            db_work=store_order,
        )
    return starter.start(
        OrderFulfillment,
        order_created(request),
        correlation_id=request.order_id,
        db_work=store_order,
    )


def _reason(event: Event) -> str:
    """Return why a saga failed, as far as the triggering event says."""
    if isinstance(event, TimedOut):
        return f"timed out waiting for {event.step}"
    reason = getattr(event, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return "the order could not be fulfilled; every step was undone"


def create(config: ServiceConfig | None = None, *, orders: Orders | None = None) -> Service:
    """Return the order service, its handlers bound to ``orders`` and ``config``."""
    config = config or ServiceConfig.from_env()
    store = orders or Orders(config.db_path("order"))
    order = Service("order", sagas=[OrderFulfillment], migrations=store.migrations())
    order.starts(OrderFulfillment)

    @order.retriable(on=ev.ShipmentDispatched, emits=ev.OrderCompleted)
    def complete(event: ev.ShipmentDispatched, ctx: Context) -> ev.OrderCompleted | None:
        """Close the order as completed: the parcel is on its way."""
        if config.intercept("order.complete", event.order_id):
            ctx.log.info("injected silence: the order is not completed")
            return None
        with store.transaction(ctx.db) as conn:
            status = store.complete(conn, event.order_id, ctx.envelope.event_id)
        if status == "failed":
            ctx.log.error("the parcel left but the order had failed already (timeout)")
            return None
        return ev.OrderCompleted(order_id=event.order_id)

    @order.compensation(
        undoes=OrderFulfillment,
        on=[ev.InventoryReleased, ev.InventoryReservationFailed, TimedOut],
        emits=ev.OrderFailed,
    )
    def reject(event: Event, ctx: Context) -> ev.OrderFailed | None:
        """Close the order as failed; on a timeout only when nothing after the start happened."""
        timeout = isinstance(event, TimedOut)
        if timeout and not timed_out_after(event, order.start_step_id(OrderFulfillment)):
            return None
        order_id = order_id_of(event)
        with store.transaction(ctx.db) as conn:
            undo = store.reject(conn, order_id, _reason(event), ctx.envelope.event_id)
            unknown = undo is Undo.NOTHING and store.status(conn, order_id) is None
        if undo is Undo.DONE or (unknown and not timeout):
            return ev.OrderFailed(order_id=order_id, reason=_reason(event))
        return None  # ended already, or completed: nothing to undo

    _command_handlers(order, store, config)
    return order


def _command_handlers(order: Service, store: Orders, config: ServiceConfig) -> None:
    """Register the orchestrated saga's command handlers: the same business functions."""

    order.starts(OrderFulfillmentOrchestrated)

    @order.retriable(on=ev.CompleteOrder, emits=ev.CompleteOrderSucceeded)
    def complete_command(event: ev.CompleteOrder, ctx: Context) -> ev.CompleteOrderSucceeded | None:
        """Record the order as completed on the orchestrator's command (as ``complete``)."""
        if config.intercept("order.complete", event.order_id):
            ctx.log.info("injected silence: the command is dropped")
            return None
        with store.transaction(ctx.db) as conn:
            status = store.complete(conn, event.order_id, ctx.envelope.event_id)
        if status == "failed":
            ctx.log.error("the parcel left but the order had failed already")
        return ev.CompleteOrderSucceeded(order_id=event.order_id)

    @order.compensation(
        undoes=OrderFulfillmentOrchestrated, on=ev.RejectOrder, emits=ev.RejectOrderSucceeded
    )
    def reject_command(event: ev.RejectOrder, ctx: Context) -> ev.RejectOrderSucceeded:
        """Record the order as failed (undoes the saga's start); replies in every case."""
        with store.transaction(ctx.db) as conn:
            store.reject(conn, event.order_id, event.reason, ctx.envelope.event_id)
        return ev.RejectOrderSucceeded(order_id=event.order_id)


service = create()
"""The order service configured from ``SHOP_*`` variables (``choreo run``'s target)."""
