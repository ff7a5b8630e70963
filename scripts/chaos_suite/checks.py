"""Turn one scenario's log and database rows into the chaos figures (every one must be 0).

``lost``
    placed orders that never reached the log or have no row in the order service.
``not_terminal``
    placed orders whose saga is not Completed or Failed in the tracker.
``duplicate_side_effects``
    extra rows: a second charge or refund of an order, a second stock decrement or
    increment of an article for an order, a second shipment, reservation, payment, order or
    notification row.
``oversold``
    articles whose stock went below zero at any point (initial stock plus the movements in
    the order they were made) or whose available stock is negative. "The order they were
    made" is the movement rows' id order: a movement's id is drawn while the article's
    row lock is held (the conditional ``UPDATE`` just before it), so ids order one
    article's movements as the database serialized them. Its ``at_ms`` is the handler's
    clock reading before it queued for that lock: ordering by it replayed a reservation
    that had waited behind a release as if it came first, and reported a sell-out that
    never happened (``oversold: 1`` under heavy load).
``tracker_mismatches``
    orders whose saga state in the tracker differs from the services' rows: a completed
    saga without its reservation, charge and dispatched shipment; a failed one that left
    something behind; an event without its row (a compensation that found nothing to
    undo, e.g. ``PaymentRefunded`` with no refund in the ledger); a row without its event;
    a terminal order not notified exactly once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .state import Row, ShopState

TERMINAL = ("Completed", "Failed")
MAX_DETAILS = 25


@dataclass(frozen=True, slots=True)
class SagaView:
    """What the tracker knows of one saga: its status and the short names of its events."""

    status: str
    events: frozenset[str]


@dataclass(slots=True)
class Figures:
    """The figures of one scenario, with a few example findings for each non-zero one."""

    orders: int = 0
    lost: int = 0
    duplicate_side_effects: int = 0
    oversold: int = 0
    not_terminal: int = 0
    tracker_mismatches: int = 0
    stock_drift: int = 0
    completed: int = 0
    failed: int = 0
    details: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, kind: str, text: str) -> None:
        """Keep ``text`` as an example of ``kind`` (at most a few per kind)."""
        if len(self.details[kind]) < MAX_DETAILS:
            self.details[kind].append(text)


def _extra(rows: Iterable[Row], key_len: int) -> Counter[tuple[object, ...]]:
    """Return, per key (the first ``key_len`` columns), how many rows beyond the first."""
    counts = Counter(tuple(row[:key_len]) for row in rows)
    return Counter({key: n - 1 for key, n in counts.items() if n > 1})


def count_duplicates(state: ShopState, figures: Figures) -> None:
    """Add every side effect that happened more than once to ``figures``."""
    groups: list[tuple[str, Iterable[Row], int]] = [
        ("order row", state.orders, 1),
        ("reservation", state.reservations, 1),
        ("payment", state.payments, 1),
        ("shipment", state.shipments, 1),
        ("ledger", state.ledger, 2),  # (order, kind): charge or refund
        ("stock movement", ((o, s, d > 0) for o, s, d, *_ in state.movements), 3),
        ("notification", state.notifications, 1),
    ]
    for name, rows, key_len in groups:
        for key, extra in _extra(rows, key_len).items():
            figures.duplicate_side_effects += extra
            figures.note("duplicate_side_effects", f"{name} {key} x{extra + 1}")


def count_oversold(state: ShopState, figures: Figures) -> None:
    """Count articles whose stock was ever below zero; note stock that does not add up."""
    initial: dict[str, int] = {}
    available: dict[str, list[int]] = defaultdict(list)
    for sku, start, now in state.stock:
        initial[sku] = int(start)
        available[sku].append(int(now))
    moves: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _order, sku, delta, _at_ms, row_id in state.movements:
        moves[sku].append((int(row_id), int(delta)))  # id order: the lock order (see above)
    for sku, start in sorted(initial.items()):
        level, lowest = start, start
        for _id, delta in sorted(moves[sku]):
            level += delta
            lowest = min(lowest, level)
        if lowest < 0 or min(available[sku]) < 0:
            figures.oversold += 1
            figures.note("oversold", f"{sku}: initial {start}, lowest {lowest}")
        if len(available[sku]) == 1 and available[sku][0] != level:
            figures.stock_drift += 1
            figures.note("stock_drift", f"{sku}: available {available[sku][0]} != {level}")


def _by_order(rows: Iterable[Row]) -> dict[str, str]:
    return {str(row[0]): str(row[1]) for row in rows}


def _order_problems(order_id: str, view: SagaView, state: _Index) -> list[str]:
    """Return every way the rows of ``order_id`` disagree with its saga in the tracker."""
    problems: list[str] = []
    order = state.orders.get(order_id)
    reservation = state.reservations.get(order_id)
    payment = state.payments.get(order_id)
    shipment = state.shipments.get(order_id)
    kinds = state.ledger.get(order_id, Counter())
    expected_status = view.status.lower()
    if order != expected_status:
        problems.append(f"tracker {view.status}, order row {order}")
    if view.status == "Completed":
        if (reservation, payment, shipment) != ("reserved", "charged", "dispatched"):
            problems.append(f"completed with {(reservation, payment, shipment)}")
    elif (
        reservation not in (None, "rejected", "released")
        or payment not in (None, "declined", "refunded")
        or shipment not in (None, "cancelled")
    ):
        problems.append(f"failed but left {(reservation, payment, shipment)}")
    pairs = (
        ("InventoryReserved", reservation in ("reserved", "released")),
        ("InventoryReleased", reservation == "released"),
        ("PaymentCharged", kinds["charge"] > 0),
        ("PaymentRefunded", kinds["refund"] > 0),
        ("ShipmentDispatched", shipment == "dispatched"),
        ("ShipmentCancelled", shipment == "cancelled"),
    )
    for event, row_there in pairs:
        if (event in view.events) != row_there:
            side = "event without its row" if event in view.events else "row without its event"
            problems.append(f"{event}: {side}")
    notes = state.notifications.get(order_id, Counter())
    if sum(notes.values()) and notes.get(f"order-{expected_status}", 0) != 1:
        problems.append(f"notifications {dict(notes)}")
    elif not notes:
        problems.append("never notified")
    return problems


@dataclass(slots=True)
class _Index:
    orders: dict[str, str]
    reservations: dict[str, str]
    payments: dict[str, str]
    shipments: dict[str, str]
    ledger: dict[str, Counter[str]]
    notifications: dict[str, Counter[str]]


def _index(state: ShopState) -> _Index:
    ledger: dict[str, Counter[str]] = defaultdict(Counter)
    for order_id, kind, _amount in state.ledger:
        ledger[str(order_id)][str(kind)] += 1
    notes: dict[str, Counter[str]] = defaultdict(Counter)
    for order_id, kind in state.notifications:
        notes[str(order_id)][str(kind)] += 1
    return _Index(
        orders=_by_order(state.orders),
        reservations=_by_order(state.reservations),
        payments=_by_order(state.payments),
        shipments=_by_order(state.shipments),
        ledger=ledger,
        notifications=notes,
    )


def compare(
    placed: Iterable[str], sagas: Mapping[str, SagaView], state: ShopState, figures: Figures
) -> None:
    """Count lost, not terminal and mismatched orders of ``placed`` into ``figures``."""
    index = _index(state)
    for order_id in placed:
        figures.orders += 1
        view = sagas.get(order_id)
        if view is None or order_id not in index.orders:
            figures.lost += 1
            figures.note(
                "lost", f"{order_id}: in log {view is not None}, row {order_id in index.orders}"
            )
            continue
        if view.status not in TERMINAL:
            figures.not_terminal += 1
            figures.note("not_terminal", f"{order_id}: {view.status} after {sorted(view.events)}")
            continue
        figures.completed += view.status == "Completed"
        figures.failed += view.status == "Failed"
        problems = _order_problems(order_id, view, index)
        if problems:
            figures.tracker_mismatches += 1
            figures.note("tracker_mismatches", f"{order_id}: {'; '.join(problems)}")


def evaluate(placed: Iterable[str], sagas: Mapping[str, SagaView], state: ShopState) -> Figures:
    """Return every figure of one scenario."""
    figures = Figures()
    compare(placed, sagas, state, figures)
    count_duplicates(state, figures)
    count_oversold(state, figures)
    return figures
