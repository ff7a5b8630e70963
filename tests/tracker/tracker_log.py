"""Hand-built saga logs for the tracker tests: envelopes, records and a small choreography."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from choreo.choreography.graph import Choreography
from choreo.choreography.service import Saga, Service
from choreo.model.envelope import Envelope, Role
from choreo.model.events import Event
from choreo.transports.base import Record

T0 = 1_700_000_000_000
SAGA = "OrderFulfillment"


@dataclass(frozen=True)
class OrderCreated(Event):
    """Opens the saga."""

    __avro_name__: ClassVar[str] = "trk.OrderCreated"
    order_id: str = "o-1"


@dataclass(frozen=True)
class InventoryReserved(Event):
    """Inventory reserved (compensatable step)."""

    __avro_name__: ClassVar[str] = "trk.InventoryReserved"
    order_id: str = "o-1"


@dataclass(frozen=True)
class PaymentCharged(Event):
    """Payment charged (compensatable step)."""

    __avro_name__: ClassVar[str] = "trk.PaymentCharged"
    order_id: str = "o-1"


@dataclass(frozen=True)
class PaymentDeclined(Event):
    """Payment failed."""

    __avro_name__: ClassVar[str] = "trk.PaymentDeclined"
    order_id: str = "o-1"


@dataclass(frozen=True)
class ShippingFailed(Event):
    """Shipping failed after payment."""

    __avro_name__: ClassVar[str] = "trk.ShippingFailed"
    order_id: str = "o-1"


@dataclass(frozen=True)
class PaymentRefunded(Event):
    """Compensation of the charge."""

    __avro_name__: ClassVar[str] = "trk.PaymentRefunded"
    order_id: str = "o-1"


@dataclass(frozen=True)
class InventoryReleased(Event):
    """Compensation of the reservation."""

    __avro_name__: ClassVar[str] = "trk.InventoryReleased"
    order_id: str = "o-1"


@dataclass(frozen=True)
class OrderShipped(Event):
    """Shipping done."""

    __avro_name__: ClassVar[str] = "trk.OrderShipped"
    order_id: str = "o-1"


@dataclass(frozen=True)
class OrderCompleted(Event):
    """Terminal success."""

    __avro_name__: ClassVar[str] = "trk.OrderCompleted"
    order_id: str = "o-1"


@dataclass(frozen=True)
class OrderFailed(Event):
    """Terminal failure."""

    __avro_name__: ClassVar[str] = "trk.OrderFailed"
    order_id: str = "o-1"


def build_choreography(*, payment_deadline: float = 5.0) -> Choreography:
    """Return order -> inventory.reserve -> payment.charge -> shipping.ship, with compensations."""
    saga = Saga(
        SAGA, start=OrderCreated, completed=OrderCompleted, failed=OrderFailed, deadline=60.0
    )
    order = Service("order", sagas=[saga])
    order.starts(saga)
    inventory = Service("inventory", sagas=[saga])
    payment = Service("payment", sagas=[saga])
    shipping = Service("shipping", sagas=[saga])

    @inventory.step(on=OrderCreated, emits=InventoryReserved)
    def reserve(event: OrderCreated) -> InventoryReserved:
        return InventoryReserved()

    @payment.step(
        on=InventoryReserved,
        emits=PaymentCharged,
        fails_with=PaymentDeclined,
        deadline=payment_deadline,
    )
    def charge(event: InventoryReserved) -> PaymentCharged:
        return PaymentCharged()

    @shipping.pivot(on=PaymentCharged, emits=OrderShipped, fails_with=ShippingFailed)
    def ship(event: PaymentCharged) -> OrderShipped:
        return OrderShipped()

    @payment.compensation(undoes=charge, on=ShippingFailed, emits=PaymentRefunded)
    def refund(event: ShippingFailed) -> PaymentRefunded:
        return PaymentRefunded()

    @inventory.compensation(
        undoes=reserve, on=[PaymentDeclined, PaymentRefunded], emits=InventoryReleased
    )
    def release(event: PaymentDeclined | PaymentRefunded) -> InventoryReleased:
        return InventoryReleased()

    @order.compensation(undoes=saga, on=InventoryReleased, emits=OrderFailed)
    def cancel(event: InventoryReleased) -> OrderFailed:
        return OrderFailed()

    @order.retriable(on=OrderShipped, emits=OrderCompleted)
    def complete(event: OrderShipped) -> OrderCompleted:
        return OrderCompleted()

    return Choreography.from_services([order, inventory, payment, shipping])


class SagaLog:
    """Builds one saga's envelopes by hand; produced-at times advance 10 ms per event."""

    def __init__(self, *, cid: str | None = None, saga: str = SAGA, start_ms: int = T0) -> None:
        self.cid = cid or str(uuid.uuid4())
        self.saga = saga
        self.clock = start_ms
        self.envelopes: list[Envelope] = []

    def _at(self, at: int | None) -> int:
        if at is None:
            self.clock += 10
            return self.clock
        return at

    def start(
        self, event_type: str = "trk.OrderCreated", *, service: str = "order",
        step: str | None = "order.start", at: int | None = None,
    ) -> Envelope:
        """Append and return the saga's start event."""
        envelope = Envelope(
            event_type=event_type,
            event_id=str(uuid.uuid4()),
            correlation_id=self.cid,
            saga=self.saga,
            role=Role.START,
            service=service,
            produced_at_ms=self._at(at),
            step=step,
        )
        self.envelopes.append(envelope)
        return envelope

    def emit(
        self, cause: Envelope | None, event_type: str, role: Role, service: str,
        step: str | None = None, *, at: int | None = None, event_id: str | None = None,
    ) -> Envelope:
        """Append and return an event caused by ``cause`` (None: an unknown cause)."""
        envelope = Envelope(
            event_type=event_type,
            event_id=event_id or str(uuid.uuid4()),
            correlation_id=self.cid,
            saga=self.saga,
            role=role,
            service=service,
            produced_at_ms=self._at(at),
            causation_id=cause.event_id if cause is not None else str(uuid.uuid4()),
            step=step,
        )
        self.envelopes.append(envelope)
        return envelope

    # the happy and unhappy paths of build_choreography()

    def completed(self) -> SagaLog:
        """Append a complete successful run."""
        s = self.start()
        r = self.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
        c = self.emit(r, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
        o = self.emit(c, "trk.OrderShipped", Role.STEP, "shipping", "shipping.ship")
        self.emit(o, "trk.OrderCompleted", Role.COMPLETED, "order", "order.complete")
        return self

    def declined(self) -> SagaLog:
        """Append a run whose payment is declined and whose steps are compensated."""
        s = self.start()
        r = self.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
        d = self.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
        x = self.emit(
            d, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve"
        )
        self.emit(x, "trk.OrderFailed", Role.FAILED, "order", "order.start")
        return self


_offsets = itertools.count()


def to_records(
    envelopes: Iterable[Envelope], *, partition: int = 0, value: bytes = b"payload"
) -> list[Record]:
    """Return one record per envelope on the topic named by its type (unique offsets)."""
    return [
        Record(
            topic=env.event_type,
            partition=partition,
            offset=next(_offsets),
            key=env.correlation_id.encode(),
            value=value,
            headers=tuple(env.to_headers()),
            timestamp_ms=env.produced_at_ms,
        )
        for env in envelopes
    ]


CHOREOGRAPHY = build_choreography()
"""The test choreography, for ``--graph tracker_log:CHOREOGRAPHY``."""
