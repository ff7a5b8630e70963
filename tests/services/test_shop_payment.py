"""The payment service: charges, deterministic declines, refunds and the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from choreo import StepKind
from services import events as ev
from services.config import ServiceConfig
from services.payment import Ledger, create, order_total
from services.store import Undo


def ledger_rows(ledger: Ledger, order_id: str) -> list[tuple[str, int]]:
    """Return (kind, amount) of every ledger row of ``order_id``."""
    return [
        (kind, amount)
        for kind, amount in ledger.query(
            "SELECT kind, amount_cents FROM payment_ledger WHERE order_id = ? ORDER BY id",
            (order_id,),
        )
    ]


def test_charge_writes_one_ledger_row_even_when_repeated() -> None:
    """A charge is recorded once; repeating it returns the same payment."""
    ledger = Ledger()
    with ledger.transaction() as conn:
        first = ledger.charge(conn, "o-1", 2_500, "e-1")
        again = ledger.charge(conn, "o-1", 2_500, "e-2")
        assert first.charged and again == first
        assert ledger.balance(conn, "o-1") == 2_500
    assert ledger_rows(ledger, "o-1") == [("charge", 2_500)]


def test_decline_takes_no_money() -> None:
    """A declined payment is stored with its reason and leaves the ledger empty."""
    ledger = Ledger()
    with ledger.transaction() as conn:
        outcome = ledger.charge(conn, "o-1", 2_500, "e-1", decline="card declined")
    assert outcome.status == "declined" and outcome.reason == "card declined"
    assert ledger_rows(ledger, "o-1") == []


def test_non_positive_amount_is_declined() -> None:
    """An order worth nothing cannot be charged."""
    ledger = Ledger()
    with ledger.transaction() as conn:
        assert ledger.charge(conn, "o-1", 0, "e-1").status == "declined"


def test_refund_pays_back_exactly_once() -> None:
    """A refund adds one negative row; repeats by the same trigger are DONE, others ALREADY."""
    ledger = Ledger()
    with ledger.transaction() as conn:
        ledger.charge(conn, "o-1", 1_000, "e-1")
        assert ledger.refund(conn, "o-1", "c-1") is Undo.DONE
        assert ledger.refund(conn, "o-1", "c-1") is Undo.DONE
        assert ledger.refund(conn, "o-1", "c-2") is Undo.ALREADY
        assert ledger.balance(conn, "o-1") == 0
    assert ledger_rows(ledger, "o-1") == [("charge", 1_000), ("refund", -1_000)]


@pytest.mark.parametrize("declined", [True, False])
def test_refund_of_nothing(declined: bool) -> None:
    """Refunding a declined or unknown payment finds nothing to undo."""
    ledger = Ledger()
    with ledger.transaction() as conn:
        if declined:
            ledger.charge(conn, "o-1", 1_000, "e-1", decline="no")
        assert ledger.refund(conn, "o-1", "c-1") is Undo.NOTHING
    assert ledger_rows(ledger, "o-1") == []


def test_order_total_multiplies_quantities_by_prices() -> None:
    """The total is the sum of quantity times unit price."""
    items = [
        ev.LineItem(sku="a", quantity=2, unit_price_cents=150),
        ev.LineItem(sku="b", quantity=1, unit_price_cents=99),
    ]
    assert order_total(items) == 399


def _reserved(order_id: str) -> ev.InventoryReserved:
    return ev.InventoryReserved(
        order_id=order_id,
        reservation_id=f"res-{order_id}",
        items=[ev.LineItem(sku="mug", quantity=2, unit_price_cents=1_200)],
    )


def test_charge_handler_follows_the_injected_decision(make_ctx: Any, handler: Any) -> None:
    """The handler declines exactly the orders the configuration declines, the same each time."""
    config = ServiceConfig(seed=5, decline_rate=0.5)
    charge = handler(create(config, ledger=Ledger()), "charge")
    for n in range(40):
        order_id = f"o-{n}"
        out = charge(_reserved(order_id), make_ctx(order_id))
        expected = ev.PaymentDeclined if config.declines(order_id) else ev.PaymentCharged
        assert type(out) is expected
        again = charge(_reserved(order_id), make_ctx(order_id))
        assert again == out


def test_charged_event_carries_the_amount(make_ctx: Any, handler: Any) -> None:
    """PaymentCharged names the payment and the amount taken."""
    charge = handler(create(ServiceConfig(), ledger=Ledger()), "charge")
    out = charge(_reserved("o-1"), make_ctx("o-1"))
    assert out == ev.PaymentCharged(order_id="o-1", payment_id="pay-o-1", amount_cents=2_400)


def test_refund_handler_on_cancellation_and_timeout(
    make_ctx: Any, handler: Any, timed_out: Any
) -> None:
    """Refund follows a cancelled shipment, or a timeout awaiting the shipment's creation."""
    ledger = Ledger()
    service = create(ServiceConfig(), ledger=ledger)
    charge, refund = handler(service, "charge"), handler(service, "refund")
    charge(_reserved("o-1"), make_ctx("o-1"))
    charge(_reserved("o-2"), make_ctx("o-2"))
    assert refund(ev.ShipmentCancelled(order_id="o-1"), make_ctx("o-1")) == ev.PaymentRefunded(
        order_id="o-1"
    )
    assert refund(timed_out("o-2", "shipping.dispatch"), make_ctx("o-2")) is None
    assert refund(
        timed_out("o-2", "shipping.create_shipment"), make_ctx("o-2")
    ) == ev.PaymentRefunded(order_id="o-2")
    with ledger.transaction() as conn:
        assert ledger.balance(conn, "o-1") == ledger.balance(conn, "o-2") == 0


def test_declarations() -> None:
    """charge is compensatable and fails with PaymentDeclined; refund undoes it."""
    specs = {s.name: s for s in create(ServiceConfig()).handlers}
    assert specs["charge"].kind is StepKind.COMPENSATABLE
    assert specs["charge"].fails_with == (ev.PaymentDeclined,)
    assert specs["refund"].undoes == "payment.charge"
    assert specs["refund"].emits == (ev.PaymentRefunded,)
