"""The inventory service: reserves an order's articles, and releases them when the saga fails.

State (its own tables in the service's store, shared by every replica on PostgreSQL): the
stock per article, one reservation per order with its lines, and every stock movement. The
movements are an audit log: an article's available stock always equals its initial stock
plus the sum of its movements, and an order has at most one decrement and one increment per
article, so a double reservation would show. Stock is taken with a conditional ``UPDATE …
WHERE available >= n`` (the row lock makes concurrent replicas queue on it), so the stock
never goes below zero whatever the number of replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from choreo import Context, Event, Service
from choreo.store import execute, executemany
from services import events as ev
from services.config import ServiceConfig
from services.saga import OrderFulfillment, TimedOut, order_id_of, timed_out_after
from services.store import Store, Undo, now_ms

__all__ = ["Reservation", "Stock", "create", "service"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of reserving stock for one order: ``reserved`` or ``rejected``."""

    order_id: str
    reservation_id: str
    status: str
    reason: str | None = None

    @property
    def reserved(self) -> bool:
        """True when the stock was reserved."""
        return self.status == "reserved"


def _merge(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Return the quantity per article, adding up lines that name the same article."""
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        merged[sku] = merged.get(sku, 0) + quantity
    return merged


class Stock(Store):
    """Stock levels, reservations and stock movements of the inventory service."""

    SERVICE = "inventory"
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS inventory_stock (
            sku TEXT PRIMARY KEY,
            initial INTEGER NOT NULL,
            available INTEGER NOT NULL CHECK (available >= 0))""",
        """CREATE TABLE IF NOT EXISTS inventory_reservations (
            order_id TEXT PRIMARY KEY,
            reservation_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('reserved', 'rejected', 'released')),
            reason TEXT,
            reserved_by TEXT NOT NULL,
            released_by TEXT,
            created_ms BIGINT NOT NULL,
            released_ms BIGINT)""",
        """CREATE TABLE IF NOT EXISTS inventory_reservation_lines (
            order_id TEXT NOT NULL,
            sku TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            PRIMARY KEY (order_id, sku))""",
        """CREATE TABLE IF NOT EXISTS inventory_movements (
            id {serial},
            order_id TEXT NOT NULL,
            sku TEXT NOT NULL,
            delta INTEGER NOT NULL,
            cause_event_id TEXT NOT NULL,
            at_ms BIGINT NOT NULL)""",
    )

    def __init__(self, path: str = ":memory:", *, stock: Mapping[str, int] | None = None) -> None:
        super().__init__(path)
        self.initial_stock = dict(stock or {})

    def seed(self, conn: Any) -> None:
        """Insert the initial stock of every article not in the table yet."""
        executemany(
            conn,
            "INSERT INTO inventory_stock (sku, initial, available) VALUES (?, ?, ?)"
            " ON CONFLICT (sku) DO NOTHING",
            [(sku, qty, qty) for sku, qty in sorted(self.initial_stock.items())],
        )

    def reserve(
        self, conn: Any, order_id: str, lines: Iterable[tuple[str, int]], cause: str
    ) -> Reservation:
        """Reserve every line of ``order_id`` or none; a repeat returns the first outcome.

        The reservation row is claimed first (``ON CONFLICT DO NOTHING``): of two
        concurrent attempts for one order exactly one goes on. Each article is taken with
        a conditional UPDATE, in sku order (no deadlock between replicas); when one is
        short, the lines taken so far are undone through a savepoint.
        """
        reservation_id = f"res-{order_id}"
        now = now_ms()
        claimed = execute(
            conn,
            "INSERT INTO inventory_reservations"
            " (order_id, reservation_id, status, reserved_by, created_ms)"
            " VALUES (?, ?, 'reserved', ?, ?) ON CONFLICT (order_id) DO NOTHING",
            (order_id, reservation_id, cause, now),
        ).rowcount
        if claimed != 1:
            row = execute(
                conn,
                "SELECT reservation_id, status, reason FROM inventory_reservations"
                " WHERE order_id = ?",
                (order_id,),
            ).fetchone()
            return Reservation(order_id, row[0], row[1], row[2])
        wanted = _merge(lines)
        reason = self._take(conn, order_id, wanted, cause, now)
        if reason is not None:
            execute(
                conn,
                "UPDATE inventory_reservations SET status = 'rejected', reason = ?"
                " WHERE order_id = ?",
                (reason, order_id),
            )
            return Reservation(order_id, reservation_id, "rejected", reason)
        executemany(
            conn,
            "INSERT INTO inventory_reservation_lines (order_id, sku, quantity) VALUES (?, ?, ?)",
            [(order_id, sku, quantity) for sku, quantity in sorted(wanted.items())],
        )
        return Reservation(order_id, reservation_id, "reserved")

    def _take(
        self, conn: Any, order_id: str, wanted: Mapping[str, int], cause: str, now: int
    ) -> str | None:
        """Take every article of ``wanted`` from stock, or none; return why not, or None."""
        if not wanted:
            return "the order has no lines"
        for sku, quantity in wanted.items():
            if quantity <= 0:
                return f"invalid quantity {quantity} of {sku}"
        conn.execute("SAVEPOINT inventory_take")
        for sku, quantity in sorted(wanted.items()):
            taken = execute(
                conn,
                "UPDATE inventory_stock SET available = available - ?"
                " WHERE sku = ? AND available >= ?",
                (quantity, sku, quantity),
            ).rowcount
            if taken != 1:
                conn.execute("ROLLBACK TO SAVEPOINT inventory_take")
                conn.execute("RELEASE SAVEPOINT inventory_take")
                left = self._left(conn, sku)
                if left is None:
                    return f"unknown article {sku}"
                return f"out of stock: {left} of {sku} left, {quantity} wanted"
            self._log_move(conn, order_id, sku, -quantity, cause=cause, at_ms=now)
        conn.execute("RELEASE SAVEPOINT inventory_take")
        return None

    def release(self, conn: Any, order_id: str, cause: str) -> Undo:
        """Put ``order_id``'s reserved stock back once and say what was found."""
        now = now_ms()
        released = execute(
            conn,
            "UPDATE inventory_reservations SET status = 'released', released_by = ?,"
            " released_ms = ? WHERE order_id = ? AND status = 'reserved'",
            (cause, now, order_id),
        ).rowcount
        if released != 1:
            row = execute(
                conn,
                "SELECT status, released_by FROM inventory_reservations WHERE order_id = ?",
                (order_id,),
            ).fetchone()
            if row is None or row[0] == "rejected":
                return Undo.NOTHING
            return Undo.DONE if row[1] == cause else Undo.ALREADY
        lines = execute(
            conn,
            "SELECT sku, quantity FROM inventory_reservation_lines WHERE order_id = ? ORDER BY sku",
            (order_id,),
        ).fetchall()
        for sku, quantity in lines:
            execute(
                conn,
                "UPDATE inventory_stock SET available = available + ? WHERE sku = ?",
                (quantity, sku),
            )
            self._log_move(conn, order_id, sku, quantity, cause=cause, at_ms=now)
        return Undo.DONE

    def available(self, conn: Any, sku: str) -> int:
        """Return the stock of ``sku`` that is not reserved (0 for an unknown article)."""
        left = self._left(conn, sku)
        return 0 if left is None else left

    @staticmethod
    def _left(conn: Any, sku: str) -> int | None:
        """Return the stock of ``sku`` that is not reserved, or None for an unknown article."""
        row = execute(
            conn, "SELECT available FROM inventory_stock WHERE sku = ?", (sku,)
        ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _log_move(
        conn: Any, order_id: str, sku: str, delta: int, *, cause: str, at_ms: int
    ) -> None:
        """Log a change of ``sku``'s available stock by ``delta``."""
        execute(
            conn,
            "INSERT INTO inventory_movements (order_id, sku, delta, cause_event_id, at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (order_id, sku, delta, cause, at_ms),
        )


def _reserve(
    store: Stock,
    config: ServiceConfig,
    event: ev.OrderCreated | ev.ReserveInventory,
    ctx: Context,
    *,
    dropped: str,
) -> Reservation | None:
    """Reserve the event's articles in the batch's transaction; None when silence is injected."""
    if config.intercept("inventory.reserve", event.order_id):
        ctx.log.info("injected silence: %s is dropped", dropped)
        return None
    with store.transaction(ctx.db) as conn:
        return store.reserve(
            conn,
            event.order_id,
            [(item.sku, item.quantity) for item in event.items],
            ctx.envelope.event_id,
        )


def create(config: ServiceConfig | None = None, *, stock: Stock | None = None) -> Service:
    """Return the inventory service, its handlers bound to ``stock`` and ``config``."""
    config = config or ServiceConfig.from_env()
    store = stock or Stock(config.db_path("inventory"), stock=config.stock)
    inventory = Service("inventory", sagas=[OrderFulfillment], migrations=store.migrations())

    @inventory.step(
        on=ev.OrderCreated, emits=ev.InventoryReserved, fails_with=ev.InventoryReservationFailed
    )
    def reserve(
        event: ev.OrderCreated, ctx: Context
    ) -> ev.InventoryReserved | ev.InventoryReservationFailed | None:
        """Reserve the ordered articles; fail the step when any is out of stock."""
        outcome = _reserve(store, config, event, ctx, dropped="the order")
        if outcome is None:
            return None
        if outcome.reserved:
            return ev.InventoryReserved(
                order_id=event.order_id,
                reservation_id=outcome.reservation_id,
                items=list(event.items),
            )
        return ev.InventoryReservationFailed(
            order_id=event.order_id, reason=outcome.reason or "rejected"
        )

    @inventory.compensation(
        undoes=reserve,
        on=[ev.PaymentDeclined, ev.PaymentRefunded, TimedOut],
        emits=ev.InventoryReleased,
    )
    def release(event: Event, ctx: Context) -> ev.InventoryReleased | None:
        """Put the reserved stock back; on a timeout only when the saga stopped after reserve."""
        timeout = isinstance(event, TimedOut)
        if timeout and not timed_out_after(event, "inventory.reserve"):
            return None
        order_id = order_id_of(event)
        with store.transaction(ctx.db) as conn:
            undo = store.release(conn, order_id, ctx.envelope.event_id)
        if undo is Undo.NOTHING and not timeout:
            ctx.log.warning("finding: no reservation of order %s to release", order_id)
        if undo is Undo.ALREADY or (timeout and undo is Undo.NOTHING):
            return None  # the chain went on already, or nothing of ours to undo
        return ev.InventoryReleased(order_id=order_id)

    _command_handlers(inventory, store, config)
    return inventory


def _command_handlers(inventory: Service, store: Stock, config: ServiceConfig) -> None:
    """Register the orchestrated saga's command handlers: the same business functions."""

    @inventory.step(
        on=ev.ReserveInventory,
        emits=ev.ReserveInventorySucceeded,
        fails_with=ev.ReserveInventoryFailed,
    )
    def reserve_command(
        event: ev.ReserveInventory, ctx: Context
    ) -> ev.ReserveInventorySucceeded | ev.ReserveInventoryFailed | None:
        """Reserve the ordered articles on the orchestrator's command (as ``reserve``)."""
        outcome = _reserve(store, config, event, ctx, dropped="the command")
        if outcome is None:
            return None
        if outcome.reserved:
            return ev.ReserveInventorySucceeded(
                order_id=event.order_id, reservation_id=outcome.reservation_id
            )
        return ev.ReserveInventoryFailed(
            order_id=event.order_id, reason=outcome.reason or outcome.status
        )

    @inventory.compensation(
        undoes=reserve_command, on=ev.ReleaseInventory, emits=ev.ReleaseInventorySucceeded
    )
    def release_command(event: ev.ReleaseInventory, ctx: Context) -> ev.ReleaseInventorySucceeded:
        """Put the order's reserved stock back; replies also when there was nothing to undo."""
        with store.transaction(ctx.db) as conn:
            store.release(conn, event.order_id, ctx.envelope.event_id)
        return ev.ReleaseInventorySucceeded(order_id=event.order_id)


service = create()
"""The inventory service configured from ``SHOP_*`` variables (``choreo run``'s target)."""
