"""The shipping service: shipments, the dispatch pivot and cancellations."""

from __future__ import annotations

from typing import Any

from choreo import StepKind
from services import events as ev
from services.config import ServiceConfig
from services.shipping import Shipments, create
from services.store import Undo


def test_create_is_idempotent() -> None:
    """A shipment is prepared once per order."""
    shipments = Shipments()
    with shipments.transaction() as conn:
        first = shipments.create(conn, "o-1", "e-1")
        assert shipments.create(conn, "o-1", "e-2") == first
    assert shipments.query("SELECT COUNT(*) FROM shipments") == [(1,)]


def test_dispatch_gives_a_tracking_number_once() -> None:
    """Dispatch moves created to dispatched; a repeat returns the same shipment."""
    shipments = Shipments()
    with shipments.transaction() as conn:
        shipments.create(conn, "o-1", "e-1")
        sent = shipments.dispatch(conn, "o-1", "e-2")
        assert sent.status == "dispatched" and sent.tracking_number
        assert shipments.dispatch(conn, "o-1", "e-3") == sent


def test_dispatch_failure_then_cancel() -> None:
    """A failed dispatch is recorded and the shipment can then be cancelled once."""
    shipments = Shipments()
    with shipments.transaction() as conn:
        shipments.create(conn, "o-1", "e-1")
        failed = shipments.dispatch(conn, "o-1", "e-2", failure="carrier said no")
        assert failed.status == "dispatch_failed" and failed.reason == "carrier said no"
        assert shipments.cancel(conn, "o-1", "c-1") is Undo.DONE
        assert shipments.cancel(conn, "o-1", "c-2") is Undo.ALREADY
        shipment = shipments.get(conn, "o-1")
    assert shipment is not None and shipment.status == "cancelled"


def test_a_dispatched_shipment_cannot_be_cancelled() -> None:
    """Past the pivot there is nothing to undo."""
    shipments = Shipments()
    with shipments.transaction() as conn:
        shipments.create(conn, "o-1", "e-1")
        shipments.dispatch(conn, "o-1", "e-2")
        assert shipments.cancel(conn, "o-1", "c-1") is Undo.NOTHING
        shipment = shipments.get(conn, "o-1")
    assert shipment is not None and shipment.status == "dispatched"


def test_a_cancelled_shipment_is_never_dispatched() -> None:
    """A late dispatch after a cancellation fails instead of shipping."""
    shipments = Shipments()
    with shipments.transaction() as conn:
        shipments.create(conn, "o-1", "e-1")
        shipments.cancel(conn, "o-1", "c-1")
        late = shipments.dispatch(conn, "o-1", "e-2")
        assert late.status == "dispatch_failed"
        assert shipments.dispatch(conn, "o-9", "e-3").status == "dispatch_failed"
        shipment = shipments.get(conn, "o-1")
    assert shipment is not None and shipment.status == "cancelled"


def test_handlers_follow_the_injected_dispatch_failures(make_ctx: Any, handler: Any) -> None:
    """Dispatch fails exactly for the orders the configuration picks; cancel undoes those."""
    config = ServiceConfig(seed=2, dispatch_failure_rate=0.3)
    shipments = Shipments()
    service = create(config, shipments=shipments)
    create_shipment, dispatch = handler(service, "create_shipment"), handler(service, "dispatch")
    cancel = handler(service, "cancel")
    for n in range(30):
        order_id = f"o-{n}"
        created = create_shipment(
            ev.PaymentCharged(order_id=order_id, payment_id="p", amount_cents=1), make_ctx(order_id)
        )
        assert created == ev.ShipmentCreated(order_id=order_id, shipment_id=f"shp-{order_id}")
        out = dispatch(created, make_ctx(order_id))
        if config.dispatch_fails(order_id):
            assert isinstance(out, ev.ShipmentDispatchFailed)
            assert cancel(out, make_ctx(order_id)) == ev.ShipmentCancelled(order_id=order_id)
        else:
            assert isinstance(out, ev.ShipmentDispatched) and out.tracking_number.startswith("TRK")


def test_cancel_on_timeout_only_when_dispatch_is_overdue(
    make_ctx: Any, handler: Any, timed_out: Any
) -> None:
    """A timeout awaiting the dispatch cancels; other timeouts do nothing here."""
    shipments = Shipments()
    service = create(ServiceConfig(), shipments=shipments)
    create_shipment, cancel = handler(service, "create_shipment"), handler(service, "cancel")
    create_shipment(
        ev.PaymentCharged(order_id="o-1", payment_id="p", amount_cents=1), make_ctx("o-1")
    )
    assert cancel(timed_out("o-1", "payment.charge"), make_ctx("o-1")) is None
    assert cancel(timed_out("o-1", "shipping.dispatch"), make_ctx("o-1")) == (
        ev.ShipmentCancelled(order_id="o-1")
    )


def test_declarations() -> None:
    """dispatch is the pivot; cancel undoes create_shipment."""
    specs = {s.name: s for s in create(ServiceConfig()).handlers}
    assert specs["create_shipment"].kind is StepKind.COMPENSATABLE
    assert specs["dispatch"].kind is StepKind.PIVOT
    assert specs["dispatch"].fails_with == (ev.ShipmentDispatchFailed,)
    assert specs["cancel"].undoes == "shipping.create_shipment"
