"""The chaos figures catch what they claim to: each kind of damage, planted in rows, counts."""

from __future__ import annotations

import sys

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

from chaos_suite.checks import SagaView, evaluate
from chaos_suite.state import ShopState

COMPLETED_EVENTS = frozenset(
    {
        "OrderCreated",
        "InventoryReserved",
        "PaymentCharged",
        "ShipmentCreated",
        "ShipmentDispatched",
        "OrderCompleted",
    }
)
FAILED_EVENTS = frozenset(
    {"OrderCreated", "InventoryReserved", "PaymentDeclined", "InventoryReleased", "OrderFailed"}
)


def clean_state() -> ShopState:
    """Return the rows of two orders: a completed one and one failed at payment."""
    return ShopState(
        orders=[("a", "completed"), ("b", "failed")],
        reservations=[("a", "reserved"), ("b", "released")],
        payments=[("a", "charged"), ("b", "declined")],
        shipments=[("a", "dispatched")],
        ledger=[("a", "charge", 500)],
        movements=[("a", "sku", -1, 1, 1), ("b", "sku", -2, 2, 2), ("b", "sku", 2, 3, 3)],
        stock=[("sku", 3, 2)],
        notifications=[("a", "order-completed"), ("b", "order-failed")],
    )


SAGAS = {"a": SagaView("Completed", COMPLETED_EVENTS), "b": SagaView("Failed", FAILED_EVENTS)}


def test_a_clean_run_has_every_figure_at_zero() -> None:
    """Rows that match the sagas give zeros."""
    figures = evaluate(["a", "b"], SAGAS, clean_state())
    assert (figures.orders, figures.completed, figures.failed) == (2, 1, 1)
    assert (
        figures.lost,
        figures.duplicate_side_effects,
        figures.oversold,
        figures.not_terminal,
        figures.tracker_mismatches,
        figures.stock_drift,
    ) == (0, 0, 0, 0, 0, 0)


def test_a_double_charge_and_a_double_decrement_are_duplicates() -> None:
    """A second charge row and a second stock decrement for one order count once each."""
    state = clean_state()
    state.ledger.append(("a", "charge", 500))
    state.movements.append(("a", "sku", -1, 4, 4))
    figures = evaluate(["a", "b"], SAGAS, state)
    assert figures.duplicate_side_effects == 2
    assert any("ledger" in d for d in figures.details["duplicate_side_effects"])


def test_stock_below_zero_at_any_moment_is_oversold() -> None:
    """Stock that dipped below zero counts even if a release brought it back later."""
    state = clean_state()
    state.movements = [("a", "sku", -2, 1, 1), ("b", "sku", -2, 2, 2), ("b", "sku", 2, 3, 3)]
    state.stock = [("sku", 3, 1)]
    assert evaluate(["a", "b"], SAGAS, state).oversold == 1


def test_movements_replay_in_lock_order_not_in_handler_clock_order() -> None:
    """A reservation that queued behind a release is replayed after it: no false oversell.

    Order b takes the last 2 units and releases them; order a's handler read its clock
    (``at_ms`` 5) before it queued for the article's row lock, and took the units only
    after b's release (row id 3). Replaying by ``at_ms`` would show -2.
    """
    state = clean_state()
    state.movements = [("b", "sku", -2, 1, 1), ("b", "sku", 2, 8, 2), ("a", "sku", -2, 5, 3)]
    state.stock = [("sku", 2, 0)]
    figures = evaluate(["a", "b"], SAGAS, state)
    assert (figures.oversold, figures.stock_drift) == (0, 0)
    state.movements[1:] = [("a", "sku", -2, 5, 2), ("b", "sku", 2, 8, 3)]  # a before b: oversold
    assert evaluate(["a", "b"], SAGAS, state).oversold == 1


def test_a_refund_event_without_a_refund_row_is_a_mismatch() -> None:
    """A compensation that found nothing to undo is a finding, not a success."""
    sagas = dict(SAGAS)
    sagas["b"] = SagaView("Failed", FAILED_EVENTS | {"PaymentRefunded"})
    figures = evaluate(["a", "b"], sagas, clean_state())
    assert figures.tracker_mismatches == 1
    assert "PaymentRefunded: event without its row" in figures.details["tracker_mismatches"][0]


def test_a_completed_saga_whose_order_row_is_pending_is_a_mismatch() -> None:
    """The tracker's Completed must match the order service's row."""
    state = clean_state()
    state.orders[0] = ("a", "pending")
    assert evaluate(["a", "b"], SAGAS, state).tracker_mismatches == 1


def test_missing_and_unfinished_sagas_are_lost_and_not_terminal() -> None:
    """An order absent from the log is lost; one still Pending is not terminal."""
    sagas = {"a": SagaView("Pending", frozenset({"OrderCreated"}))}
    figures = evaluate(["a", "b"], sagas, clean_state())
    assert (figures.lost, figures.not_terminal) == (1, 1)
