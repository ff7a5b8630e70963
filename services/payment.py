"""The payment service: charges an order's total, and refunds it when the saga fails later.

State (its own tables in the service's store, shared by every replica on PostgreSQL): one
payment per order (charged, declined or refunded) and a ledger of money movements, one
``charge`` and at most one ``refund`` row per order: a double charge or a double refund
would show as a second row. The payment row is claimed with ``INSERT … ON CONFLICT DO
NOTHING`` and refunded with a conditional ``UPDATE``, so concurrent replicas never charge
or refund twice. Declines are injected by
configuration (:meth:`~services.config.ServiceConfig.declines`), deterministically per
order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from choreo import Context, Event, Service
from choreo.store import execute
from services import events as ev
from services.config import ServiceConfig
from services.saga import OrderFulfillment, TimedOut, order_id_of, timed_out_after
from services.store import Store, Undo, now_ms

__all__ = ["Ledger", "Payment", "create", "order_total", "service"]


@dataclass(frozen=True, slots=True)
class Payment:
    """The outcome of charging one order: ``charged`` or ``declined`` (or later ``refunded``)."""

    order_id: str
    payment_id: str
    amount_cents: int
    status: str
    reason: str | None = None

    @property
    def charged(self) -> bool:
        """True when the money was taken (even if refunded since)."""
        return self.status in ("charged", "refunded")


def order_total(items: Iterable[ev.LineItem]) -> int:
    """Return the total in cents of an order's lines (quantity times unit price)."""
    return sum(item.quantity * item.unit_price_cents for item in items)


class Ledger(Store):
    """Payments and the money ledger of the payment service."""

    SERVICE = "payment"
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS payments (
            order_id TEXT PRIMARY KEY,
            payment_id TEXT NOT NULL,
            amount_cents INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('charged', 'declined', 'refunded')),
            reason TEXT,
            charged_by TEXT NOT NULL,
            refunded_by TEXT,
            created_ms BIGINT NOT NULL,
            refunded_ms BIGINT)""",
        """CREATE TABLE IF NOT EXISTS payment_ledger (
            id {serial},
            order_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('charge', 'refund')),
            amount_cents INTEGER NOT NULL,
            cause_event_id TEXT NOT NULL,
            at_ms BIGINT NOT NULL)""",
    )

    def charge(
        self,
        conn: Any,
        order_id: str,
        amount_cents: int,
        cause: str,
        *,
        decline: str | None = None,
    ) -> Payment:
        """Charge ``amount_cents`` once (or record ``decline``); a repeat gives the 1st outcome."""
        if decline is None and amount_cents <= 0:
            decline = f"invalid amount {amount_cents}"
        status = "declined" if decline else "charged"
        payment_id = f"pay-{order_id}"
        now = now_ms()
        claimed = execute(
            conn,
            "INSERT INTO payments"
            " (order_id, payment_id, amount_cents, status, reason, charged_by, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
            (order_id, payment_id, amount_cents, status, decline, cause, now),
        ).rowcount
        if claimed != 1:
            row = execute(
                conn,
                "SELECT payment_id, amount_cents, status, reason FROM payments WHERE order_id = ?",
                (order_id,),
            ).fetchone()
            return Payment(order_id, row[0], row[1], row[2], row[3])
        if status == "charged":
            execute(
                conn,
                "INSERT INTO payment_ledger (order_id, kind, amount_cents, cause_event_id, at_ms)"
                " VALUES (?, 'charge', ?, ?, ?)",
                (order_id, amount_cents, cause, now),
            )
        return Payment(order_id, payment_id, amount_cents, status, decline)

    def refund(self, conn: Any, order_id: str, cause: str) -> Undo:
        """Pay ``order_id``'s charge back once and say what was found."""
        now = now_ms()
        refunded = execute(
            conn,
            "UPDATE payments SET status = 'refunded', refunded_by = ?, refunded_ms = ?"
            " WHERE order_id = ? AND status = 'charged'",
            (cause, now, order_id),
        ).rowcount
        row = execute(
            conn,
            "SELECT amount_cents, status, refunded_by FROM payments WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        if refunded != 1:
            if row is None or row[1] == "declined":
                return Undo.NOTHING
            return Undo.DONE if row[2] == cause else Undo.ALREADY
        execute(
            conn,
            "INSERT INTO payment_ledger (order_id, kind, amount_cents, cause_event_id, at_ms)"
            " VALUES (?, 'refund', ?, ?, ?)",
            (order_id, -row[0], cause, now),
        )
        return Undo.DONE

    def balance(self, conn: Any, order_id: str) -> int:
        """Return the net money taken for ``order_id`` (charges minus refunds) in cents."""
        row = execute(
            conn,
            "SELECT COALESCE(SUM(amount_cents), 0) FROM payment_ledger WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        return int(row[0])


def _charge(
    store: Ledger,
    config: ServiceConfig,
    order_id: str,
    amount_cents: int,
    ctx: Context,
    *,
    dropped: str,
) -> Payment | None:
    """Charge (or decline) the order in the batch's transaction; None when silence is injected."""
    if config.intercept("payment.charge", order_id):
        ctx.log.info("injected silence: %s is dropped", dropped)
        return None
    decline = "card declined by issuer" if config.declines(order_id) else None
    with store.transaction(ctx.db) as conn:
        return store.charge(conn, order_id, amount_cents, ctx.envelope.event_id, decline=decline)


def create(config: ServiceConfig | None = None, *, ledger: Ledger | None = None) -> Service:
    """Return the payment service, its handlers bound to ``ledger`` and ``config``."""
    config = config or ServiceConfig.from_env()
    store = ledger or Ledger(config.db_path("payment"))
    payment = Service("payment", sagas=[OrderFulfillment], migrations=store.migrations())

    @payment.step(on=ev.InventoryReserved, emits=ev.PaymentCharged, fails_with=ev.PaymentDeclined)
    def charge(
        event: ev.InventoryReserved, ctx: Context
    ) -> ev.PaymentCharged | ev.PaymentDeclined | None:
        """Charge the order's total; decline it when the (injected) card issuer says no."""
        outcome = _charge(
            store, config, event.order_id, order_total(event.items), ctx, dropped="the charge"
        )
        if outcome is None:
            return None
        if outcome.charged:
            return ev.PaymentCharged(
                order_id=event.order_id,
                payment_id=outcome.payment_id,
                amount_cents=outcome.amount_cents,
            )
        return ev.PaymentDeclined(order_id=event.order_id, reason=outcome.reason or "declined")

    @payment.compensation(
        undoes=charge, on=[ev.ShipmentCancelled, TimedOut], emits=ev.PaymentRefunded
    )
    def refund(event: Event, ctx: Context) -> ev.PaymentRefunded | None:
        """Refund the charge; on a timeout only when the saga stopped right after the charge."""
        timeout = isinstance(event, TimedOut)
        if timeout and not timed_out_after(event, "payment.charge"):
            return None
        order_id = order_id_of(event)
        with store.transaction(ctx.db) as conn:
            undo = store.refund(conn, order_id, ctx.envelope.event_id)
        if undo is Undo.NOTHING and not timeout:
            ctx.log.warning("finding: no charge of order %s to refund", order_id)
        if undo is Undo.ALREADY or (timeout and undo is Undo.NOTHING):
            return None  # the chain went on already, or nothing of ours to undo
        return ev.PaymentRefunded(order_id=order_id)

    _command_handlers(payment, store, config)
    return payment


def _command_handlers(payment: Service, store: Ledger, config: ServiceConfig) -> None:
    """Register the orchestrated saga's command handlers: the same business functions."""

    @payment.step(
        on=ev.ChargePayment, emits=ev.ChargePaymentSucceeded, fails_with=ev.ChargePaymentFailed
    )
    def charge_command(
        event: ev.ChargePayment, ctx: Context
    ) -> ev.ChargePaymentSucceeded | ev.ChargePaymentFailed | None:
        """Charge the amount on the orchestrator's command (as ``charge``)."""
        outcome = _charge(
            store, config, event.order_id, event.amount_cents, ctx, dropped="the command"
        )
        if outcome is None:
            return None
        if outcome.charged:
            return ev.ChargePaymentSucceeded(
                order_id=event.order_id,
                payment_id=outcome.payment_id,
                amount_cents=outcome.amount_cents,
            )
        return ev.ChargePaymentFailed(order_id=event.order_id, reason=outcome.reason or "declined")

    @payment.compensation(
        undoes=charge_command, on=ev.RefundPayment, emits=ev.RefundPaymentSucceeded
    )
    def refund_command(event: ev.RefundPayment, ctx: Context) -> ev.RefundPaymentSucceeded:
        """Refund the order's charge; replies also when there was nothing to undo."""
        with store.transaction(ctx.db) as conn:
            store.refund(conn, event.order_id, ctx.envelope.event_id)
        return ev.RefundPaymentSucceeded(order_id=event.order_id)


service = create()
"""The payment service configured from ``SHOP_*`` variables (``choreo run``'s target)."""
