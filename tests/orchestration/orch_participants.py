"""Scripted participants of the example's orchestrated order saga, for the engine's tests.

Each participant reacts to the orchestrator's commands like the example services do, but
its behaviour comes from a :class:`Script`: which steps reply with their failure, which
commands are dropped (no reply: the step times out), which compensations keep failing.
Every call is counted in ``Script.calls`` (handler name -> times run for real), so tests
can tell that no step ran twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from choreo.choreography.service import Retry, Service
from choreo.errors import TransientError
from services import events as ev

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"

ONCE = Retry(max_attempts=1, backoff=0.0, jitter=False)


@dataclass
class Script:
    """What the scripted participants do (sets of step or handler names)."""

    fail: set[str] = field(default_factory=set)
    """Forward steps that reply with their failure: reserve, charge, dispatch."""
    silent: set[str] = field(default_factory=set)
    """Handlers that drop their command (no reply), e.g. ``prepare`` or ``refund``."""
    broken: set[str] = field(default_factory=set)
    """Compensation handlers that raise on every attempt (dead-lettered, no reply)."""
    calls: Counter[str] = field(default_factory=Counter)
    """Handler name -> how often it did its work (a duplicate command is not counted)."""
    done: set[tuple[str, str]] = field(default_factory=set)

    def run(self, name: str, order_id: str) -> bool:
        """Count one call of ``name`` for ``order_id``; return False when it must stay silent."""
        if name in self.broken:
            raise TransientError(f"{name} is broken")
        if name in self.silent:
            return False
        if (name, order_id) not in self.done:
            self.done.add((name, order_id))
            self.calls[name] += 1
        return True


def build(script: Script) -> list[Service]:
    """Return the scripted order, inventory, payment and shipping participants."""
    return [_order(script), _inventory(script), _payment(script), _shipping(script)]


def _inventory(script: Script) -> Service:
    inventory = Service("inventory")

    @inventory.step(
        on=ev.ReserveInventory,
        emits=ev.ReserveInventorySucceeded,
        fails_with=ev.ReserveInventoryFailed,
    )
    def reserve(event: ev.ReserveInventory) -> object:
        if not script.run("reserve", event.order_id):
            return None
        if "reserve" in script.fail:
            return ev.ReserveInventoryFailed(order_id=event.order_id, reason="out of stock")
        return ev.ReserveInventorySucceeded(order_id=event.order_id, reservation_id="r")

    @inventory.compensation(
        undoes=reserve, on=ev.ReleaseInventory, emits=ev.ReleaseInventorySucceeded, retry=ONCE
    )
    def release(event: ev.ReleaseInventory) -> object:
        if not script.run("release", event.order_id):
            return None
        return ev.ReleaseInventorySucceeded(order_id=event.order_id)

    return inventory


def _payment(script: Script) -> Service:
    payment = Service("payment")

    @payment.step(
        on=ev.ChargePayment, emits=ev.ChargePaymentSucceeded, fails_with=ev.ChargePaymentFailed
    )
    def charge(event: ev.ChargePayment) -> object:
        if not script.run("charge", event.order_id):
            return None
        if "charge" in script.fail:
            return ev.ChargePaymentFailed(order_id=event.order_id, reason="declined")
        return ev.ChargePaymentSucceeded(
            order_id=event.order_id, payment_id="p", amount_cents=event.amount_cents
        )

    @payment.compensation(
        undoes=charge, on=ev.RefundPayment, emits=ev.RefundPaymentSucceeded, retry=ONCE
    )
    def refund(event: ev.RefundPayment) -> object:
        if not script.run("refund", event.order_id):
            return None
        return ev.RefundPaymentSucceeded(order_id=event.order_id)

    return payment


def _shipping(script: Script) -> Service:
    shipping = Service("shipping")

    @shipping.step(on=ev.PrepareShipment, emits=ev.PrepareShipmentSucceeded)
    def prepare(event: ev.PrepareShipment) -> object:
        if not script.run("prepare", event.order_id):
            return None
        return ev.PrepareShipmentSucceeded(order_id=event.order_id, shipment_id="s")

    @shipping.compensation(
        undoes=prepare, on=ev.CancelShipment, emits=ev.CancelShipmentSucceeded, retry=ONCE
    )
    def cancel(event: ev.CancelShipment) -> object:
        if not script.run("cancel", event.order_id):
            return None
        return ev.CancelShipmentSucceeded(order_id=event.order_id)

    @shipping.pivot(
        on=ev.DispatchShipment,
        emits=ev.DispatchShipmentSucceeded,
        fails_with=ev.DispatchShipmentFailed,
    )
    def dispatch(event: ev.DispatchShipment) -> object:
        if not script.run("dispatch", event.order_id):
            return None
        if "dispatch" in script.fail:
            return ev.DispatchShipmentFailed(order_id=event.order_id, reason="carrier said no")
        return ev.DispatchShipmentSucceeded(order_id=event.order_id, tracking_number="T")

    return shipping


def _order(script: Script) -> Service:
    from services.saga import OrderFulfillmentOrchestrated

    order = Service("order")
    order.starts(OrderFulfillmentOrchestrated)

    @order.retriable(on=ev.CompleteOrder, emits=ev.CompleteOrderSucceeded)
    def complete(event: ev.CompleteOrder) -> object:
        if not script.run("complete", event.order_id):
            return None
        return ev.CompleteOrderSucceeded(order_id=event.order_id)

    @order.compensation(
        undoes=OrderFulfillmentOrchestrated,
        on=ev.RejectOrder,
        emits=ev.RejectOrderSucceeded,
        retry=ONCE,
    )
    def reject(event: ev.RejectOrder) -> object:
        if not script.run("reject", event.order_id):
            return None
        return ev.RejectOrderSucceeded(order_id=event.order_id)

    return order


def submitted(order_id: str = "o-1") -> ev.OrderSubmitted:
    """Return an ``OrderSubmitted`` start event of one line."""
    return ev.OrderSubmitted(
        order_id=order_id,
        customer_id="c-1",
        items=[ev.LineItem(sku="BOOK", quantity=2, unit_price_cents=1500)],
        total_cents=3000,
        currency="EUR",
        created_at=0,
    )
