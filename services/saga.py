"""The order-fulfilment saga: the event that opens it and the events that end it.

The choreography (each arrow one service's handler, see the service modules)::

    order.start           ─ OrderCreated
    inventory.reserve     OrderCreated       → InventoryReserved | InventoryReservationFailed
    payment.charge        InventoryReserved  → PaymentCharged | PaymentDeclined
    shipping.create_shipment  PaymentCharged → ShipmentCreated
    shipping.dispatch     ShipmentCreated    → ShipmentDispatched | ShipmentDispatchFailed  (pivot)
    order.complete        ShipmentDispatched → OrderCompleted                       (retriable)

    shipping.cancel   undoes create_shipment  on ShipmentDispatchFailed → ShipmentCancelled
    payment.refund    undoes charge           on ShipmentCancelled      → PaymentRefunded
    inventory.release undoes reserve          on PaymentDeclined | PaymentRefunded
                                                                        → InventoryReleased
    order.reject      undoes the saga's start on InventoryReleased | InventoryReservationFailed
                                                                        → OrderFailed
    notification.notify (listener)            on OrderCompleted | OrderFailed → NotificationSent

``shipping.dispatch`` is the saga's *pivot*: once the parcel has left the warehouse nothing
can be undone, so it has no compensation; its failure (nothing left) starts compensating
the steps before it, and the step after it (``order.complete``) is retriable.

Timeouts: the tracker's :class:`~choreo.tracker.TimeoutService` emits
``choreo.SagaTimedOut`` naming the step the saga was waiting for (the one that should
have reacted to its last event). Exactly one service starts compensating: the owner of
the step *before* that one (:data:`AWAITED_AFTER`), and only if it holds something to
undo. The chain then continues through the ordinary compensation events, so the steps
are still undone in reverse order and ``OrderFailed`` still comes last. A saga past the
pivot (waiting for ``order.complete``) is not compensated: it stays stuck for a human.
"""

from __future__ import annotations

from typing import Final

from choreo import Saga
from choreo import SagaTimedOut as TimedOut
from services.events import OrderCompleted, OrderCreated, OrderFailed, OrderSubmitted

__all__ = [
    "AWAITED_AFTER",
    "OrderFulfillment",
    "OrderFulfillmentOrchestrated",
    "TimedOut",
    "order_id_of",
    "timed_out_after",
]

OrderFulfillment = Saga(
    "OrderFulfillment",
    start=OrderCreated,
    completed=[OrderCompleted],
    failed=[OrderFailed],
)
"""An order placed is reserved, charged, shipped and completed, or failed and undone.

No deadline is declared: how long a saga may wait for its next event is the tracker's
setting (``choreo ui --deadline``, ``choreo demo --deadline``; 30 s by default).
"""


OrderFulfillmentOrchestrated = Saga(
    "OrderFulfillmentOrchestrated",
    start=OrderSubmitted,
    completed=[OrderCompleted],
    failed=[OrderFailed],
)
"""The same order fulfilment run by an orchestrator (:mod:`services.orchestrated`).

It ends with the same ``OrderCompleted``/``OrderFailed`` events, so the notification service
reacts to it by choreography, unchanged.
"""


AWAITED_AFTER: Final = {
    "order.start": "inventory.reserve",
    "inventory.reserve": "payment.charge",
    "payment.charge": "shipping.create_shipment",
    "shipping.create_shipment": "shipping.dispatch",
}
"""Each compensatable step (and the start) -> the step that reacts to what it emits."""


def timed_out_after(event: object, step_id: str) -> bool:
    """Return True when ``event`` is a timeout of this saga waiting right after ``step_id``."""
    return (
        isinstance(event, TimedOut)
        and event.saga == OrderFulfillment.name
        and event.step == AWAITED_AFTER.get(step_id)
    )


def order_id_of(event: object) -> str:
    """Return the order an event is about: its ``order_id``, or a timeout's correlation id.

    The order service opens every saga with the order id as its correlation id.
    """
    order_id = getattr(event, "order_id", None)
    if isinstance(order_id, str):
        return order_id
    if isinstance(event, TimedOut):
        return event.correlation_id
    raise TypeError(f"{type(event).__qualname__} names no order")
