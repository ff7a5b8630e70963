"""The order-fulfilment saga as an orchestration: one orchestrator commands the same services.

The orchestrator (``choreo run services.orchestrated:service``) sends commands and waits for
replies; inventory, payment, shipping and order react to the commands with handlers that
call the same business functions as their choreography handlers::

    order.start                 ─ OrderSubmitted                    (opens the saga)
    ┌ reserve   ReserveInventory → inventory   ReserveInventorySucceeded | ...Failed
    └ charge    ChargePayment    → payment     ChargePaymentSucceeded | ...Failed   (parallel)
    prepare     PrepareShipment  → shipping    PrepareShipmentSucceeded
    dispatch    DispatchShipment → shipping    DispatchShipmentSucceeded | ...Failed (pivot)
    complete    CompleteOrder    → order       CompleteOrderSucceeded              (retriable)
    → OrderCompleted

    compensations, last completed step first: cancel (CancelShipment), refund
    (RefundPayment), release (ReleaseInventory), then reject (RejectOrder, undoes the
    start) → OrderFailed

A step without a reply within its deadline times out (``choreo.SagaTimedOut``) and the
saga compensates, the timed-out step included (its outcome is unknown). The notification
service reacts to ``OrderCompleted``/``OrderFailed`` by choreography, as it does for the
choreographed saga.
"""

from __future__ import annotations

import os

from choreo.orchestration import Orchestrator, SagaRun
from choreo.orchestration.declaration import CompensationPolicy
from services import events as ev
from services.payment import order_total
from services.saga import OrderFulfillmentOrchestrated

__all__ = ["DEFAULT_DEADLINE", "create", "orchestrator", "service"]

DEFAULT_DEADLINE = 10.0
"""Seconds a participant has to reply to a command before the step times out."""


def _submitted(run: SagaRun) -> ev.OrderSubmitted:
    start = run.start
    if not isinstance(start, ev.OrderSubmitted):  # pragma: no cover - the engine sets it
        raise TypeError(f"saga {run.correlation_id} has no OrderSubmitted start")
    return start


def _reason(run: SagaRun) -> str:
    """Return why the saga failed, as far as its first failure says."""
    failure = run.failure
    if failure is None:
        return "the order could not be fulfilled; every step was undone"
    if isinstance(failure, ev.ChargePaymentFailed | ev.ReserveInventoryFailed):
        return failure.reason
    if isinstance(failure, ev.DispatchShipmentFailed):
        return failure.reason
    step = getattr(failure, "step", "")
    return f"timed out waiting for {step}" if step else "the order could not be fulfilled"


def create(
    *, deadline: float = DEFAULT_DEADLINE, compensation: CompensationPolicy | None = None
) -> Orchestrator:
    """Return the order saga's orchestrator (``deadline`` seconds per step by default)."""
    orch = Orchestrator(
        "orchestrator",
        saga=OrderFulfillmentOrchestrated,
        deadline=deadline,
        compensation=compensation,
    )

    @orch.step(
        sends=ev.ReserveInventory,
        success=ev.ReserveInventorySucceeded,
        failure=ev.ReserveInventoryFailed,
        parallel="hold",
    )
    def reserve(run: SagaRun) -> ev.ReserveInventory:
        """Reserve the ordered articles."""
        order = _submitted(run)
        return ev.ReserveInventory(order_id=order.order_id, items=list(order.items))

    @orch.compensation(
        undoes=reserve, sends=ev.ReleaseInventory, success=ev.ReleaseInventorySucceeded
    )
    def release(run: SagaRun) -> ev.ReleaseInventory:
        """Put the reserved stock back."""
        return ev.ReleaseInventory(order_id=run.correlation_id)

    @orch.step(
        sends=ev.ChargePayment,
        success=ev.ChargePaymentSucceeded,
        failure=ev.ChargePaymentFailed,
        parallel="hold",
    )
    def charge(run: SagaRun) -> ev.ChargePayment:
        """Charge the order's total, while the stock is reserved."""
        order = _submitted(run)
        return ev.ChargePayment(order_id=order.order_id, amount_cents=order_total(order.items))

    @orch.compensation(undoes=charge, sends=ev.RefundPayment, success=ev.RefundPaymentSucceeded)
    def refund(run: SagaRun) -> ev.RefundPayment:
        """Refund the charge."""
        return ev.RefundPayment(order_id=run.correlation_id)

    @orch.step(sends=ev.PrepareShipment, success=ev.PrepareShipmentSucceeded)
    def prepare(run: SagaRun) -> ev.PrepareShipment:
        """Prepare the shipment."""
        return ev.PrepareShipment(order_id=run.correlation_id)

    @orch.compensation(undoes=prepare, sends=ev.CancelShipment, success=ev.CancelShipmentSucceeded)
    def cancel(run: SagaRun) -> ev.CancelShipment:
        """Cancel the prepared shipment."""
        return ev.CancelShipment(order_id=run.correlation_id)

    @orch.pivot(
        sends=ev.DispatchShipment,
        success=ev.DispatchShipmentSucceeded,
        failure=ev.DispatchShipmentFailed,
    )
    def dispatch(run: SagaRun) -> ev.DispatchShipment:
        """Hand the parcel to the carrier: the point of no return."""
        return ev.DispatchShipment(order_id=run.correlation_id)

    @orch.retriable(sends=ev.CompleteOrder, success=ev.CompleteOrderSucceeded)
    def complete(run: SagaRun) -> ev.CompleteOrder:
        """Record the order as completed (re-sent until the order service replies)."""
        return ev.CompleteOrder(order_id=run.correlation_id)

    @orch.compensation(
        undoes=OrderFulfillmentOrchestrated,
        sends=ev.RejectOrder,
        success=ev.RejectOrderSucceeded,
    )
    def reject(run: SagaRun) -> ev.RejectOrder:
        """Record the order as failed: undoes the saga's start, last."""
        return ev.RejectOrder(order_id=run.correlation_id, reason=_reason(run))

    @orch.completed
    def completed(run: SagaRun) -> ev.OrderCompleted:
        """The parcel left and the order is recorded completed."""
        return ev.OrderCompleted(order_id=run.correlation_id)

    @orch.failed
    def failed(run: SagaRun) -> ev.OrderFailed:
        """Every completed step was undone."""
        return ev.OrderFailed(order_id=run.correlation_id, reason=_reason(run))

    return orch


orchestrator = create(deadline=float(os.environ.get("SHOP_STEP_DEADLINE", DEFAULT_DEADLINE)))
"""The orchestrator; ``SHOP_STEP_DEADLINE`` sets its step deadline in seconds."""

service = orchestrator.service
"""The orchestrator as a service (``choreo run services.orchestrated:service``)."""
