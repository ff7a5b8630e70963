"""The shipping service: prepares a shipment, dispatches it (the pivot), cancels it on failure.

State (its own table in the service's store, shared by every replica on PostgreSQL): one
shipment per order, created with ``INSERT … ON CONFLICT DO NOTHING`` and moved only by
conditional updates (so two replicas never dispatch one parcel twice), whose status moves
``created`` → ``dispatched`` (the pivot: the parcel left, nothing can be undone), or
``created`` → ``dispatch_failed`` → ``cancelled``, or ``created`` → ``cancelled`` (timeout).
Dispatch failures are injected by configuration
(:meth:`~services.config.ServiceConfig.dispatch_fails`), deterministically per order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from choreo import Context, Event, Service
from choreo.store import execute
from services import events as ev
from services.config import ServiceConfig
from services.saga import OrderFulfillment, TimedOut, order_id_of, timed_out_after
from services.store import Store, Undo, now_ms

__all__ = ["Shipment", "Shipments", "create", "service"]


@dataclass(frozen=True, slots=True)
class Shipment:
    """One order's shipment as stored: its id, status and, once dispatched, tracking number."""

    order_id: str
    shipment_id: str
    status: str
    tracking_number: str | None = None
    reason: str | None = None


class Shipments(Store):
    """The shipments of the shipping service."""

    SERVICE = "shipping"
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS shipments (
            order_id TEXT PRIMARY KEY,
            shipment_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('created', 'dispatched', 'dispatch_failed', 'cancelled')),
            tracking_number TEXT,
            reason TEXT,
            created_by TEXT NOT NULL,
            dispatched_by TEXT,
            cancelled_by TEXT,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL)""",
    )

    def get(self, conn: Any, order_id: str) -> Shipment | None:
        """Return ``order_id``'s shipment, or None when there is none."""
        row = execute(
            conn,
            "SELECT shipment_id, status, tracking_number, reason FROM shipments WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        return None if row is None else Shipment(order_id, row[0], row[1], row[2], row[3])

    def create(self, conn: Any, order_id: str, cause: str) -> Shipment:
        """Prepare ``order_id``'s shipment once; a repeat returns the shipment as it is."""
        shipment_id = f"shp-{order_id}"
        now = now_ms()
        created = execute(
            conn,
            "INSERT INTO shipments"
            " (order_id, shipment_id, status, created_by, created_ms, updated_ms)"
            " VALUES (?, ?, 'created', ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
            (order_id, shipment_id, cause, now, now),
        ).rowcount
        if created == 1:
            return Shipment(order_id, shipment_id, "created")
        known = self.get(conn, order_id)
        assert known is not None  # the conflict was on this row
        return known

    def dispatch(
        self, conn: Any, order_id: str, cause: str, *, failure: str | None = None
    ) -> Shipment:
        """Hand ``order_id``'s shipment to the carrier once, or record ``failure``.

        A repeat returns the first outcome; a missing or cancelled shipment fails.
        """
        now = now_ms()
        if failure is None:
            tracking = "TRK" + hashlib.sha256(order_id.encode()).hexdigest()[:12].upper()
            moved = execute(
                conn,
                "UPDATE shipments SET status = 'dispatched', tracking_number = ?,"
                " dispatched_by = ?, updated_ms = ? WHERE order_id = ? AND status = 'created'",
                (tracking, cause, now, order_id),
            ).rowcount
        else:
            moved = execute(
                conn,
                "UPDATE shipments SET status = 'dispatch_failed', reason = ?, dispatched_by = ?,"
                " updated_ms = ? WHERE order_id = ? AND status = 'created'",
                (failure, cause, now, order_id),
            ).rowcount
        known = self.get(conn, order_id)
        if known is None:
            return Shipment(order_id, "", "dispatch_failed", reason="no shipment was prepared")
        if moved != 1 and known.status == "cancelled":
            return Shipment(order_id, known.shipment_id, "dispatch_failed", reason="cancelled")
        return known

    def cancel(self, conn: Any, order_id: str, cause: str) -> Undo:
        """Cancel ``order_id``'s shipment once unless it left already; say what was found."""
        cancelled = execute(
            conn,
            "UPDATE shipments SET status = 'cancelled', cancelled_by = ?, updated_ms = ?"
            " WHERE order_id = ? AND status IN ('created', 'dispatch_failed')",
            (cause, now_ms(), order_id),
        ).rowcount
        if cancelled == 1:
            return Undo.DONE
        row = execute(
            conn, "SELECT status, cancelled_by FROM shipments WHERE order_id = ?", (order_id,)
        ).fetchone()
        if row is None or row[0] == "dispatched":
            return Undo.NOTHING  # nothing prepared, or past the pivot: nothing to undo
        return Undo.DONE if row[1] == cause else Undo.ALREADY


def _dispatch(
    store: Shipments, config: ServiceConfig, order_id: str, ctx: Context, *, dropped: str
) -> Shipment | None:
    """Dispatch (or fail to) in the batch's transaction; None when silence is injected."""
    if config.intercept("shipping.dispatch", order_id):
        ctx.log.info("injected silence: %s is dropped", dropped)
        return None
    failure = "carrier rejected the parcel" if config.dispatch_fails(order_id) else None
    with store.transaction(ctx.db) as conn:
        return store.dispatch(conn, order_id, ctx.envelope.event_id, failure=failure)


def create(config: ServiceConfig | None = None, *, shipments: Shipments | None = None) -> Service:
    """Return the shipping service, its handlers bound to ``shipments`` and ``config``."""
    config = config or ServiceConfig.from_env()
    store = shipments or Shipments(config.db_path("shipping"))
    shipping = Service("shipping", sagas=[OrderFulfillment], migrations=store.migrations())

    @shipping.step(on=ev.PaymentCharged, emits=ev.ShipmentCreated)
    def create_shipment(event: ev.PaymentCharged, ctx: Context) -> ev.ShipmentCreated | None:
        """Prepare the order's shipment."""
        if config.intercept("shipping.create_shipment", event.order_id):
            ctx.log.info("injected silence: the shipment is not prepared")
            return None
        with store.transaction(ctx.db) as conn:
            shipment = store.create(conn, event.order_id, ctx.envelope.event_id)
        return ev.ShipmentCreated(order_id=event.order_id, shipment_id=shipment.shipment_id)

    @shipping.pivot(
        on=ev.ShipmentCreated, emits=ev.ShipmentDispatched, fails_with=ev.ShipmentDispatchFailed
    )
    def dispatch(
        event: ev.ShipmentCreated, ctx: Context
    ) -> ev.ShipmentDispatched | ev.ShipmentDispatchFailed | None:
        """Hand the parcel to the carrier: the point of no return (or a dispatch failure)."""
        shipment = _dispatch(store, config, event.order_id, ctx, dropped="the shipment")
        if shipment is None:
            return None
        if shipment.status == "dispatched":
            return ev.ShipmentDispatched(
                order_id=event.order_id, tracking_number=shipment.tracking_number or ""
            )
        return ev.ShipmentDispatchFailed(
            order_id=event.order_id, reason=shipment.reason or "dispatch failed"
        )

    @shipping.compensation(
        undoes=create_shipment,
        on=[ev.ShipmentDispatchFailed, TimedOut],
        emits=ev.ShipmentCancelled,
    )
    def cancel(event: Event, ctx: Context) -> ev.ShipmentCancelled | None:
        """Cancel the prepared shipment; on a timeout only when the saga stopped right here."""
        timeout = isinstance(event, TimedOut)
        if timeout and not timed_out_after(event, "shipping.create_shipment"):
            return None
        order_id = order_id_of(event)
        with store.transaction(ctx.db) as conn:
            undo = store.cancel(conn, order_id, ctx.envelope.event_id)
        if undo is Undo.NOTHING and not timeout:
            ctx.log.warning("finding: no shipment of order %s to cancel", order_id)
        if undo is Undo.ALREADY or (timeout and undo is Undo.NOTHING):
            return None  # the chain went on already, or nothing of ours to undo
        return ev.ShipmentCancelled(order_id=order_id)

    _command_handlers(shipping, store, config)
    return shipping


def _command_handlers(shipping: Service, store: Shipments, config: ServiceConfig) -> None:
    """Register the orchestrated saga's command handlers: the same business functions."""

    @shipping.step(on=ev.PrepareShipment, emits=ev.PrepareShipmentSucceeded)
    def prepare_command(
        event: ev.PrepareShipment, ctx: Context
    ) -> ev.PrepareShipmentSucceeded | None:
        """Prepare the order's shipment on the orchestrator's command (as ``create_shipment``)."""
        if config.intercept("shipping.create_shipment", event.order_id):
            ctx.log.info("injected silence: the command is dropped")
            return None
        with store.transaction(ctx.db) as conn:
            shipment = store.create(conn, event.order_id, ctx.envelope.event_id)
        return ev.PrepareShipmentSucceeded(
            order_id=event.order_id, shipment_id=shipment.shipment_id
        )

    @shipping.compensation(
        undoes=prepare_command, on=ev.CancelShipment, emits=ev.CancelShipmentSucceeded
    )
    def cancel_command(event: ev.CancelShipment, ctx: Context) -> ev.CancelShipmentSucceeded:
        """Cancel the prepared shipment; replies also when there was nothing to undo."""
        with store.transaction(ctx.db) as conn:
            store.cancel(conn, event.order_id, ctx.envelope.event_id)
        return ev.CancelShipmentSucceeded(order_id=event.order_id)

    @shipping.pivot(
        on=ev.DispatchShipment,
        emits=ev.DispatchShipmentSucceeded,
        fails_with=ev.DispatchShipmentFailed,
    )
    def dispatch_command(
        event: ev.DispatchShipment, ctx: Context
    ) -> ev.DispatchShipmentSucceeded | ev.DispatchShipmentFailed | None:
        """Hand the parcel to the carrier on the orchestrator's command (as ``dispatch``)."""
        shipment = _dispatch(store, config, event.order_id, ctx, dropped="the command")
        if shipment is None:
            return None
        if shipment.status == "dispatched":
            return ev.DispatchShipmentSucceeded(
                order_id=event.order_id, tracking_number=shipment.tracking_number or ""
            )
        return ev.DispatchShipmentFailed(
            order_id=event.order_id, reason=shipment.reason or "dispatch failed"
        )


service = create()
"""The shipping service configured from ``SHOP_*`` variables (``choreo run``'s target)."""
