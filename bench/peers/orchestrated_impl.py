"""choreo orchestrated: the example's orchestrator commanding four participant services.

The orchestrator is the order saga of ``services/orchestrated.py`` itself
(:func:`services.orchestrated.create`), run by
:class:`~choreo.orchestration.OrchestratorRunner` with choreo's default
:class:`~choreo.runtime.WorkerConfig` (apart from group and topic names) and a memory
inbox. Its steps: reserve and charge in parallel, prepare the shipment, dispatch (the
pivot), complete; on a failure the completed steps are compensated in reverse order and
the order is rejected. The step deadline is set to 600 s so that no saga times out under
the benchmark's injected backlog (a timeout would change the outcome the order id decides).

The participants are choreo services declared here with the same trivial dict logic as
every peer (the example's participants keep their state in SQLite): each reacts to a
command and returns the reply. Every service, and the orchestrator, is a process of its
own. The start event is ``OrderSubmitted`` (the orchestrated saga's), the terminal events
are the same ``OrderCompleted``/``OrderFailed``.

Because reserve and charge run in parallel, a reservation that fails still charges (and
then refunds) unless the payment is declined too: the expected final states and the
number of records per saga differ from the choreography's (:data:`SHAPE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bench.peers import choreography as ch
from bench.peers.choreo_impl import WorkerThreads, kafka_config, worker_config
from bench.peers.harness import RunContext
from bench.peers.shape import SagaShape
from choreo.choreography.service import Service
from choreo.model.events import Event, event_type_of
from choreo.runtime import MemoryInbox, Worker
from choreo.runtime.serdes import serde_for
from choreo.transports.factory import open_transport
from services import events as ev
from services.orchestrated import create as create_orchestrator
from services.saga import OrderFulfillmentOrchestrated

DEADLINE_S: Final = 600.0
SERVICES: Final = ("orchestrator", "inventory", "payment", "shipping", "order")


def build_participants(states: dict[str, dict[str, str]]) -> list[Service]:
    """Return the four participants, their handlers writing to ``states[service]``."""
    saga = OrderFulfillmentOrchestrated
    inventory = Service("inventory", sagas=[saga])
    payment = Service("payment", sagas=[saga])
    shipping = Service("shipping", sagas=[saga])
    order = Service("order", sagas=[saga])
    order.starts(saga)
    stock = states.setdefault("inventory", {})
    ledger = states.setdefault("payment", {})
    parcels = states.setdefault("shipping", {})
    orders = states.setdefault("order", {})

    @inventory.step(
        on=ev.ReserveInventory,
        emits=ev.ReserveInventorySucceeded,
        fails_with=ev.ReserveInventoryFailed,
    )
    def reserve(event: ev.ReserveInventory) -> Event:
        order_id = event.order_id
        if ch.reservation_fails(order_id):
            stock[order_id] = "unavailable"
            return ev.ReserveInventoryFailed(order_id=order_id, reason="out of stock")
        stock[order_id] = "reserved"
        return ev.ReserveInventorySucceeded(order_id=order_id, reservation_id="r-" + order_id)

    @inventory.compensation(
        undoes=reserve, on=ev.ReleaseInventory, emits=ev.ReleaseInventorySucceeded
    )
    def release(event: ev.ReleaseInventory) -> ev.ReleaseInventorySucceeded:
        stock[event.order_id] = "released"
        return ev.ReleaseInventorySucceeded(order_id=event.order_id)

    @payment.step(
        on=ev.ChargePayment, emits=ev.ChargePaymentSucceeded, fails_with=ev.ChargePaymentFailed
    )
    def charge(event: ev.ChargePayment) -> Event:
        order_id = event.order_id
        if ch.payment_declined(order_id):
            ledger[order_id] = "declined"
            return ev.ChargePaymentFailed(order_id=order_id, reason="card declined")
        ledger[order_id] = "charged"
        return ev.ChargePaymentSucceeded(
            order_id=order_id, payment_id="p-" + order_id, amount_cents=event.amount_cents
        )

    @payment.compensation(undoes=charge, on=ev.RefundPayment, emits=ev.RefundPaymentSucceeded)
    def refund(event: ev.RefundPayment) -> ev.RefundPaymentSucceeded:
        ledger[event.order_id] = "refunded"
        return ev.RefundPaymentSucceeded(order_id=event.order_id)

    @shipping.step(on=ev.PrepareShipment, emits=ev.PrepareShipmentSucceeded)
    def prepare(event: ev.PrepareShipment) -> ev.PrepareShipmentSucceeded:
        parcels[event.order_id] = "created"
        return ev.PrepareShipmentSucceeded(
            order_id=event.order_id, shipment_id="s-" + event.order_id
        )

    @shipping.pivot(
        on=ev.DispatchShipment,
        emits=ev.DispatchShipmentSucceeded,
        fails_with=ev.DispatchShipmentFailed,
    )
    def dispatch(event: ev.DispatchShipment) -> Event:
        order_id = event.order_id
        if ch.dispatch_fails(order_id):
            parcels[order_id] = "undispatchable"
            return ev.DispatchShipmentFailed(order_id=order_id, reason="carrier unavailable")
        parcels[order_id] = "dispatched"
        return ev.DispatchShipmentSucceeded(order_id=order_id, tracking_number="t-" + order_id)

    @shipping.compensation(undoes=prepare, on=ev.CancelShipment, emits=ev.CancelShipmentSucceeded)
    def cancel(event: ev.CancelShipment) -> ev.CancelShipmentSucceeded:
        parcels[event.order_id] = "cancelled"
        return ev.CancelShipmentSucceeded(order_id=event.order_id)

    @order.retriable(on=ev.CompleteOrder, emits=ev.CompleteOrderSucceeded)
    def complete(event: ev.CompleteOrder) -> ev.CompleteOrderSucceeded:
        orders[event.order_id] = "completed"
        return ev.CompleteOrderSucceeded(order_id=event.order_id)

    @order.compensation(undoes=saga, on=ev.RejectOrder, emits=ev.RejectOrderSucceeded)
    def reject(event: ev.RejectOrder) -> ev.RejectOrderSucceeded:
        orders[event.order_id] = "failed"
        return ev.RejectOrderSucceeded(order_id=event.order_id)

    return [inventory, payment, shipping, order]


def _every_service() -> list[Service]:
    """Return the orchestrator's service and the participants (for topics and the serde)."""
    return [create_orchestrator(deadline=DEADLINE_S).service, *build_participants({})]


def _event_types() -> tuple[str, ...]:
    """Return every event type the orchestrator and the participants consume or emit."""
    found: dict[str, None] = {}
    for service in _every_service():
        for spec in service.handlers:
            for cls in (*spec.consumes, *spec.emits, *spec.fails_with):
                found[event_type_of(cls)] = None
    for name in SERVICES:
        found[f"choreo.deadletter.{name}"] = None
    return tuple(found)


def final_states(order_id: str) -> Mapping[str, str]:
    """Return each service's state at the end of ``order_id``'s orchestrated saga."""
    declined = ch.payment_declined(order_id)
    if ch.reservation_fails(order_id):  # charge ran in parallel: refunded unless declined
        return {
            "inventory": "unavailable",
            "payment": "declined" if declined else "refunded",
            "order": "failed",
        }
    if declined:
        return {"inventory": "released", "payment": "declined", "order": "failed"}
    if ch.dispatch_fails(order_id):
        return {
            "inventory": "released",
            "payment": "refunded",
            "shipping": "cancelled",
            "order": "failed",
        }
    return ch.FINAL_STATES["completed"]


def events_of(order_id: str) -> int:
    """Return the records one orchestrated saga puts on Kafka (start, commands, replies, end)."""
    if ch.reservation_fails(order_id):  # start, 2 commands, 2 replies, [refund], reject, end
        return 8 if ch.payment_declined(order_id) else 10
    if ch.payment_declined(order_id):  # + release, reject
        return 10
    if ch.dispatch_fails(order_id):  # + prepare, dispatch, cancel, refund, release, reject
        return 18
    return 12  # + prepare, dispatch, complete, OrderCompleted


def submitted(order_id: str, index: int, created_at_ms: int) -> dict[str, Any]:
    """Return the OrderSubmitted datum of the ``index``-th order."""
    datum = ch.order_created(order_id, index, created_at_ms)
    del datum["coupon_code"]
    return datum


SHAPE: Final = SagaShape(
    saga=OrderFulfillmentOrchestrated.name,
    start_event=event_type_of(ev.OrderSubmitted),
    services=SERVICES,
    event_types=_event_types(),
    final_states=final_states,
    events_of=events_of,
    start_datum=submitted,
    single=frozenset({"orchestrator"}),
)


class OrchestratedImplementation(WorkerThreads):
    """The orchestrator or one participant, a choreo Worker in a thread (one per process)."""

    name = "choreo-orchestrated"
    uses_kafka = True
    shape: SagaShape = SHAPE

    def __init__(self) -> None:
        super().__init__()
        self._states: dict[str, dict[str, str]] = {}

    def start(self, ctx: RunContext, service: str | None = None) -> None:
        """Start ``service`` (None: the orchestrator and every participant), a thread each."""
        orchestrator = create_orchestrator(deadline=DEADLINE_S)
        participants = build_participants(self._states)
        serde = serde_for(
            [orchestrator.service, *participants], schemas_dir=ch.REPO_ROOT / "schemas"
        )
        config = kafka_config(ctx)
        names = [service] if service else list(SERVICES)
        for name in names:
            settings = worker_config(ctx, name)
            transport = open_transport("confluent", config=config)
            if name == "orchestrator":
                from choreo.orchestration import OrchestratorRunner

                runner = OrchestratorRunner(
                    orchestrator, transport, serde, config=settings, inbox=MemoryInbox()
                )
                target: Any = runner.run
            else:
                declared = next(p for p in participants if p.name == name)
                target = Worker(
                    declared, transport, serde, config=settings, inbox=MemoryInbox()
                ).run
            self.add(name, target)
        self.start_all()

    def states(self) -> dict[str, dict[str, str]]:
        """Return each participant's state dict."""
        return {s: per for s, per in self._states.items() if per}


def create() -> OrchestratedImplementation:
    """Return choreo's orchestrated saga (orchestrator and participants)."""
    return OrchestratedImplementation()
