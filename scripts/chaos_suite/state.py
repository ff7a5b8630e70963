"""Read the example services' own tables after a run: PostgreSQL, or one SQLite file per replica.

The figures are computed from rows, never from what the services said they did: a charge
is a row in ``payment_ledger``, a stock movement a row in ``inventory_movements``. With
SQLite every replica has its own file, so the rows of all files of a service are read and
added up: a charge made twice by two replicas shows as two rows, as it should.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Row = tuple[Any, ...]


class Source(Protocol):
    """Where a service's tables are: ``rows`` runs one query over all of them."""

    def rows(self, service: str, table: str, sql: str) -> list[Row]:
        """Return the rows of ``sql`` (which reads ``table``) over ``service``'s databases."""
        ...


class SqliteFiles:
    """One SQLite file per replica, ``<workdir>/<service>-<index>.sqlite3`` (read only)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def rows(self, service: str, table: str, sql: str) -> list[Row]:
        """Return the rows of ``sql`` from every file of ``service`` that has ``table``."""
        found: list[Row] = []
        for path in sorted(self.workdir.glob(f"{service}-*.sqlite3")):
            uri = f"file:{path.resolve()}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=30.0)) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
                ).fetchone()
                if exists:
                    found.extend(conn.execute(sql).fetchall())
        return found


class PostgresDatabase:
    """The scenario's PostgreSQL database, shared by every replica of every service."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            yield conn

    def rows(self, service: str, table: str, sql: str) -> list[Row]:
        """Return the rows of ``sql``, run with ``table``'s schema on the search path."""
        with self._connect() as conn:
            schemas = [
                row[0]
                for row in conn.execute(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = %s",
                    (table,),
                ).fetchall()
            ]
            if not schemas:
                return []
            preferred = [name for name in (f"svc_{service}", service) if name in schemas]
            schema = (preferred or schemas)[0]
            conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
            return list(conn.execute(sql).fetchall())


@dataclass(slots=True)
class ShopState:
    """The rows the checks need, from the five services' tables."""

    orders: list[Row]
    """(order_id, status)"""
    reservations: list[Row]
    """(order_id, status)"""
    payments: list[Row]
    """(order_id, status)"""
    shipments: list[Row]
    """(order_id, status)"""
    ledger: list[Row]
    """(order_id, kind, amount_cents) per ledger row"""
    movements: list[Row]
    """(order_id, sku, delta, at_ms, id) per stock movement"""
    stock: list[Row]
    """(sku, initial, available)"""
    notifications: list[Row]
    """(order_id, kind)"""


def load(source: Source) -> ShopState:
    """Read every table the checks need from ``source``."""
    return ShopState(
        orders=source.rows("order", "orders", "SELECT order_id, status FROM orders"),
        reservations=source.rows(
            "inventory",
            "inventory_reservations",
            "SELECT order_id, status FROM inventory_reservations",
        ),
        payments=source.rows("payment", "payments", "SELECT order_id, status FROM payments"),
        shipments=source.rows("shipping", "shipments", "SELECT order_id, status FROM shipments"),
        ledger=source.rows(
            "payment", "payment_ledger", "SELECT order_id, kind, amount_cents FROM payment_ledger"
        ),
        movements=source.rows(
            "inventory",
            "inventory_movements",
            "SELECT order_id, sku, delta, at_ms, id FROM inventory_movements",
        ),
        stock=source.rows(
            "inventory", "inventory_stock", "SELECT sku, initial, available FROM inventory_stock"
        ),
        notifications=source.rows(
            "notification", "notifications", "SELECT order_id, kind FROM notifications"
        ),
    )


def notified(source: Source) -> int:
    """Return how many notifications the notification service recorded so far."""
    rows = source.rows("notification", "notifications", "SELECT COUNT(*) FROM notifications")
    return sum(int(row[0]) for row in rows)
