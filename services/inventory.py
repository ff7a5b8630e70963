"""The inventory service: reserves an order's articles, and releases them when the saga fails.

State (its own SQLite tables): the stock per article, one reservation per order with its
lines, and every stock movement. The movements are an audit log: an article's available
stock always equals its initial stock plus the sum of its movements, and an order has at
most one decrement and one increment per article, so a double reservation would show.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from choreo import Context, Event, Service
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
            created_ms INTEGER NOT NULL,
            released_ms INTEGER)""",
        """CREATE TABLE IF NOT EXISTS inventory_reservation_lines (
            order_id TEXT NOT NULL,
            sku TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            PRIMARY KEY (order_id, sku))""",
        """CREATE TABLE IF NOT EXISTS inventory_movements (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id TEXT NOT NULL,
            sku TEXT NOT NULL,
            delta INTEGER NOT NULL,
            cause_event_id TEXT NOT NULL,
            at_ms INTEGER NOT NULL)""",
    )

    def __init__(self, path: str = ":memory:", *, stock: Mapping[str, int] | None = None) -> None:
        super().__init__(path)
        self.initial_stock = dict(stock or {})

    def seed(self, conn: sqlite3.Connection) -> None:
        """Insert the initial stock of every article not in the table yet."""
        conn.executemany(
            "INSERT OR IGNORE INTO inventory_stock (sku, initial, available) VALUES (?, ?, ?)",
            [(sku, qty, qty) for sku, qty in self.initial_stock.items()],
        )

    def reserve(
        self,
        conn: sqlite3.Connection,
        order_id: str,
        lines: Iterable[tuple[str, int]],
        cause: str,
    ) -> Reservation:
        """Reserve every line of ``order_id`` or none; a repeat returns the first outcome."""
        row = conn.execute(
            "SELECT reservation_id, status, reason FROM inventory_reservations WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        if row is not None:
            return Reservation(order_id, row[0], row[1], row[2])
        wanted = _merge(lines)
        reason = self._shortage(conn, wanted)
        status = "rejected" if reason else "reserved"
        reservation_id = f"res-{order_id}"
        now = now_ms()
        conn.execute(
            "INSERT INTO inventory_reservations"
            " (order_id, reservation_id, status, reason, reserved_by, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (order_id, reservation_id, status, reason, cause, now),
        )
        if status == "reserved":
            for sku, quantity in wanted.items():
                self._move(conn, order_id, sku, -quantity, cause=cause, at_ms=now)
            conn.executemany(
                "INSERT INTO inventory_reservation_lines (order_id, sku, quantity)"
                " VALUES (?, ?, ?)",
                [(order_id, sku, quantity) for sku, quantity in wanted.items()],
            )
        return Reservation(order_id, reservation_id, status, reason)

    def release(self, conn: sqlite3.Connection, order_id: str, cause: str) -> Undo:
        """Put ``order_id``'s reserved stock back once and say what was found."""
        row = conn.execute(
            "SELECT status, released_by FROM inventory_reservations WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        if row is None or row[0] == "rejected":
            return Undo.NOTHING
        status, released_by = row
        if status == "released":
            return Undo.DONE if released_by == cause else Undo.ALREADY
        now = now_ms()
        lines = conn.execute(
            "SELECT sku, quantity FROM inventory_reservation_lines WHERE order_id = ?",
            (order_id,),
        ).fetchall()
        for sku, quantity in lines:
            self._move(conn, order_id, sku, quantity, cause=cause, at_ms=now)
        conn.execute(
            "UPDATE inventory_reservations SET status = 'released', released_by = ?,"
            " released_ms = ? WHERE order_id = ?",
            (cause, now, order_id),
        )
        return Undo.DONE

    def available(self, conn: sqlite3.Connection, sku: str) -> int:
        """Return the stock of ``sku`` that is not reserved (0 for an unknown article)."""
        row = conn.execute("SELECT available FROM inventory_stock WHERE sku = ?", (sku,)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _shortage(conn: sqlite3.Connection, wanted: Mapping[str, int]) -> str | None:
        """Return why ``wanted`` cannot be reserved, or None when it can."""
        if not wanted:
            return "the order has no lines"
        for sku, quantity in wanted.items():
            row = conn.execute(
                "SELECT available FROM inventory_stock WHERE sku = ?", (sku,)
            ).fetchone()
            if row is None:
                return f"unknown article {sku}"
            if quantity <= 0:
                return f"invalid quantity {quantity} of {sku}"
            if row[0] < quantity:
                return f"out of stock: {row[0]} of {sku} left, {quantity} wanted"
        return None

    @staticmethod
    def _move(
        conn: sqlite3.Connection, order_id: str, sku: str, delta: int, *, cause: str, at_ms: int
    ) -> None:
        """Change ``sku``'s available stock by ``delta`` and log the movement."""
        conn.execute(
            "UPDATE inventory_stock SET available = available + ? WHERE sku = ?", (delta, sku)
        )
        conn.execute(
            "INSERT INTO inventory_movements (order_id, sku, delta, cause_event_id, at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (order_id, sku, delta, cause, at_ms),
        )


def create(config: ServiceConfig | None = None, *, stock: Stock | None = None) -> Service:
    """Return the inventory service, its handlers bound to ``stock`` and ``config``."""
    config = config or ServiceConfig.from_env()
    store = stock or Stock(config.db_path("inventory"), stock=config.stock)
    inventory = Service("inventory", sagas=[OrderFulfillment])

    @inventory.step(
        on=ev.OrderCreated, emits=ev.InventoryReserved, fails_with=ev.InventoryReservationFailed
    )
    def reserve(
        event: ev.OrderCreated, ctx: Context
    ) -> ev.InventoryReserved | ev.InventoryReservationFailed | None:
        """Reserve the ordered articles; fail the step when any is out of stock."""
        if config.intercept("inventory.reserve", event.order_id):
            ctx.log.info("injected silence: the order is dropped")
            return None
        with store.transaction(ctx.db) as conn:
            outcome = store.reserve(
                conn,
                event.order_id,
                [(item.sku, item.quantity) for item in event.items],
                ctx.envelope.event_id,
            )
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
        if undo is Undo.ALREADY or (timeout and undo is Undo.NOTHING):
            return None  # the chain went on already, or nothing of ours to undo
        return ev.InventoryReleased(order_id=order_id)

    return inventory


service = create()
"""The inventory service configured from ``SHOP_*`` variables (``choreo run``'s target)."""
