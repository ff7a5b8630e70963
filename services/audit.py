"""Check the shop's own state after a run: did every saga really do, or really undo, its work?

:func:`audit` reads the five services' own tables where their workers keep them: in each
service's store (read only). A service's store is named as ``choreo run --store`` names
it: a SQLite file (a path or ``sqlite:///path``: one replica) or a PostgreSQL URL with
the service's schema (``postgresql://…?schema=inventory``), which every replica of the
service shares, so one URL covers N replicas. It checks, per order and overall:

- a **completed** order has its stock reserved, one charge and no refund, a dispatched
  shipment;
- a **failed** order has nothing left behind: its stock back (or never reserved), its
  charge refunded (or never made), its shipment cancelled (or never prepared), and it was
  never dispatched;
- nothing happened twice: at most one charge and one refund per order, at most one
  decrement and one increment per article and order, and every article's stock equals its
  initial stock plus its movements;
- every order that ended was notified exactly once, with the right kind.

The services' state is the truth the tracker's counts are compared with in the
end-to-end tests and in ``choreo demo``.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from choreo.store import execute
from choreo.store.url import split_schema, sqlite_file

__all__ = ["AuditReport", "StoreLocation", "audit"]

StoreLocation = str | Path
"""Where a service's store is: a SQLite path or URL, or a ``postgresql://`` URL."""

_MAX_PROBLEMS = 50


@dataclass(slots=True)
class AuditReport:
    """What :func:`audit` found: order statuses, per-service facts and every problem."""

    statuses: Counter[str] = field(default_factory=Counter)
    """Orders per status (``pending``, ``completed``, ``failed``)."""
    facts: dict[str, int] = field(default_factory=dict)
    """Counts read from the services' tables (charges, refunds, cancellations...)."""
    problems: list[str] = field(default_factory=list)
    """Each broken invariant, in words (at most a few dozen are kept)."""
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        """True when no invariant is broken."""
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        """Record one broken invariant."""
        self.problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)


def _is_postgres(location: StoreLocation) -> bool:
    return str(location).startswith(("postgresql:", "postgres:"))


@contextmanager
def _reader(location: StoreLocation) -> Iterator[Any | None]:
    """Yield a read-only connection to a service's store, or None when it does not exist."""
    if _is_postgres(location):
        import psycopg

        url, schema = split_schema(str(location))
        with psycopg.connect(url, autocommit=True, connect_timeout=30) as conn:
            conn.execute("SET default_transaction_read_only = on")
            if schema is not None:
                conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
            yield conn
        return
    path = sqlite_file(str(location)) if isinstance(location, str) else location
    if not path.exists():
        yield None
        return
    reader = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30.0)
    try:
        yield reader
    finally:
        reader.close()


def _has_table(conn: Any, table: str) -> bool:
    """Return whether ``table`` exists (in the schema a PostgreSQL connection searches)."""
    if isinstance(conn, sqlite3.Connection):
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return conn.execute(sql, (table,)).fetchone() is not None
    return execute(conn, "SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()[0] is True


def _read(stores: Mapping[str, StoreLocation], service: str, table: str, sql: str) -> list[Any]:
    """Return the rows of ``sql`` in ``service``'s store, none when ``table`` is not there."""
    location = stores.get(service)
    if location is None:
        return []
    with _reader(location) as conn:
        if conn is None or not _has_table(conn, table):
            return []
        return [tuple(row) for row in execute(conn, sql).fetchall()]


@dataclass(slots=True)
class _State:
    """The rows :func:`audit` reads from the five services' stores."""

    orders: dict[str, str]
    reservations: dict[str, str]
    payments: dict[str, str]
    shipments: dict[str, str]
    ledger: list[Any]
    movements: list[Any]
    stock: list[Any]
    notified: list[Any]


def _load(stores: Mapping[str, StoreLocation]) -> _State:
    """Read what the audit needs from each service's store."""
    return _State(
        orders=dict(_read(stores, "order", "orders", "SELECT order_id, status FROM orders")),
        reservations=dict(
            _read(
                stores,
                "inventory",
                "inventory_reservations",
                "SELECT order_id, status FROM inventory_reservations",
            )
        ),
        payments=dict(
            _read(stores, "payment", "payments", "SELECT order_id, status FROM payments")
        ),
        shipments=dict(
            _read(stores, "shipping", "shipments", "SELECT order_id, status FROM shipments")
        ),
        ledger=_read(
            stores,
            "payment",
            "payment_ledger",
            "SELECT order_id, kind, COUNT(*), SUM(amount_cents) FROM payment_ledger"
            " GROUP BY order_id, kind",
        ),
        movements=_read(
            stores,
            "inventory",
            "inventory_movements",
            "SELECT order_id, sku, delta > 0, COUNT(*) FROM inventory_movements"
            " GROUP BY order_id, sku, delta > 0",
        ),
        stock=_read(
            stores,
            "inventory",
            "inventory_stock",
            "SELECT s.sku, s.initial, s.available, COALESCE(SUM(m.delta), 0)"
            " FROM inventory_stock s LEFT JOIN inventory_movements m ON m.sku = s.sku"
            " GROUP BY s.sku",
        ),
        notified=_read(
            stores,
            "notification",
            "notifications",
            "SELECT order_id, kind, COUNT(*) FROM notifications GROUP BY order_id, kind",
        ),
    )


def _check_once(state: _State, report: AuditReport) -> Counter[str]:
    """Check that no money or stock moved twice; return the net money taken per order."""
    net: Counter[str] = Counter()
    for order_id, kind, count, amount in state.ledger:
        net[order_id] += amount
        report.facts[f"{kind}s"] = report.facts.get(f"{kind}s", 0) + count
        if count > 1:
            report.problem(f"{order_id}: {count} {kind}s in the payment ledger")
    for order_id, sku, increment, count in state.movements:
        if count > 1:
            word = "increments" if increment else "decrements"
            report.problem(f"{order_id}: {count} stock {word} of {sku}")
    for sku, initial, available, moved in state.stock:
        if available != initial + moved:
            report.problem(f"{sku}: available {available} != initial {initial} + moves {moved}")
    return net


def _check_orders(state: _State, net: Counter[str], report: AuditReport) -> None:
    """Check that completed orders kept their work and failed ones left nothing behind."""
    for order_id, status in state.orders.items():
        found = (
            state.reservations.get(order_id),
            state.payments.get(order_id),
            state.shipments.get(order_id),
        )
        if status == "completed":
            if found != ("reserved", "charged", "dispatched") or net[order_id] <= 0:
                report.problem(
                    f"{order_id}: completed, but reservation/payment/shipment are {found}"
                    f" (net {net[order_id]})"
                )
        elif status == "failed" and (
            found[0] not in (None, "rejected", "released")
            or found[1] not in (None, "declined", "refunded")
            or found[2] not in (None, "cancelled")
            or net[order_id] != 0
        ):
            report.problem(
                f"{order_id}: failed, but reservation/payment/shipment are {found}"
                f" (net {net[order_id]})"
            )


def _check_notifications(state: _State, report: AuditReport) -> None:
    """Check that every order that ended was notified once, with the right kind."""
    kinds: dict[str, list[tuple[str, int]]] = {}
    for order_id, kind, count in state.notified:
        kinds.setdefault(order_id, []).append((kind, count))
    for order_id, status in state.orders.items():
        if status == "pending":
            continue
        got = kinds.get(order_id, [])
        if got != [(f"order-{status}", 1)]:
            report.problem(f"{order_id}: {status}, but notifications sent are {got}")
    report.facts["notifications"] = sum(count for _, _, count in state.notified)


def audit(stores: Mapping[str, StoreLocation], *, expect_notifications: bool = True) -> AuditReport:
    """Check the invariants above over the services' stores, keyed by service name.

    A service without a store (or whose store or tables do not exist yet) reads as empty.
    """
    state = _load(stores)
    report = AuditReport()
    report.statuses.update(state.orders.values())
    net = _check_once(state, report)
    _check_orders(state, net, report)
    if expect_notifications:
        _check_notifications(state, report)
    report.facts["reservations"] = len(state.reservations)
    for name, table, status in (
        ("released", state.reservations, "released"),
        ("declined", state.payments, "declined"),
        ("cancelled", state.shipments, "cancelled"),
        ("dispatched", state.shipments, "dispatched"),
    ):
        report.facts[name] = sum(1 for s in table.values() if s == status)
    return report
