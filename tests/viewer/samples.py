"""Sample sagas for the viewer tests: records built event by event, fed into a real Tracker."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from choreo.model.envelope import Envelope, Role
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record

XSS = "<script>alert(1)</script>"
"""A payload value that must be shown as text, never run."""

ORDERS = "shop.orders"


@dataclass
class SagaWriter:
    """Builds the records of one saga, event by event, with consecutive offsets and times."""

    correlation_id: str
    saga: str = "OrderFulfillment"
    start_ms: int = 1_700_000_000_000
    records: list[Record] = field(default_factory=list)
    last: Envelope | None = None
    offsets: list[int] = field(default_factory=lambda: [0])

    def emit(
        self,
        event_type: str,
        role: Role,
        service: str,
        *,
        step: str | None = None,
        payload: dict[str, Any] | None = None,
        after_ms: int = 40,
    ) -> Envelope:
        """Append one event caused by the previous one and return its envelope."""
        if self.last is None:
            envelope = Envelope(
                event_type=event_type,
                event_id=str(uuid.uuid4()),
                correlation_id=self.correlation_id,
                saga=self.saga,
                role=role,
                service=service,
                produced_at_ms=self.start_ms,
                step=step,
            )
        else:
            envelope = Envelope(
                event_type=event_type,
                event_id=str(uuid.uuid4()),
                correlation_id=self.correlation_id,
                saga=self.saga,
                role=role,
                service=service,
                produced_at_ms=self.last.produced_at_ms + after_ms,
                causation_id=self.last.event_id,
                step=step,
            )
        body = json.dumps(payload if payload is not None else {"type": event_type}).encode()
        offset = self.offsets[0]
        self.offsets[0] += 1
        self.records.append(
            Record(
                topic=ORDERS,
                partition=0,
                offset=offset,
                key=self.correlation_id.encode(),
                value=body,
                headers=tuple(envelope.to_headers()),
                timestamp_ms=envelope.produced_at_ms,
            )
        )
        self.last = envelope
        return envelope


@dataclass
class Sample:
    """The sample sagas fed into the tracker, by what they show."""

    completed: str
    compensated: str
    pending: str
    refund: str
    pending_writer: SagaWriter
    declined_event_id: str


def feed_sample(tracker: Tracker, start_ms: int = 1_700_000_000_000) -> Sample:
    """Feed four sagas (completed, failed with a compensation, pending, another saga type)."""
    offsets = [0]

    def writer(prefix: str, at: int, saga: str = "OrderFulfillment") -> SagaWriter:
        return SagaWriter(f"{prefix}-{uuid.uuid4().hex[:10]}", saga, start_ms + at, offsets=offsets)

    done = writer("ord-done", 0)
    done.emit(f"{ORDERS}.OrderCreated", Role.START, "order", step="order.place")
    done.emit("shop.inventory.InventoryReserved", Role.STEP, "inventory", step="inventory.reserve")
    done.emit("shop.payment.PaymentCharged", Role.STEP, "payment", step="payment.charge")
    done.emit(f"{ORDERS}.OrderCompleted", Role.COMPLETED, "order")

    comp = writer("ord-comp", 1_000)
    comp.emit(f"{ORDERS}.OrderCreated", Role.START, "order", step="order.place")
    comp.emit("shop.inventory.InventoryReserved", Role.STEP, "inventory", step="inventory.reserve")
    declined = comp.emit(
        "shop.payment.PaymentDeclined",
        Role.FAILURE,
        "payment",
        step="payment.charge",
        payload={"order_id": comp.correlation_id, "reason": XSS},
    )
    comp.emit(
        "shop.inventory.InventoryReleased", Role.COMPENSATION, "inventory", step="inventory.reserve"
    )
    comp.emit(f"{ORDERS}.OrderFailed", Role.FAILED, "order")

    pending = writer("ord-pend", 2_000)
    pending.emit(f"{ORDERS}.OrderCreated", Role.START, "order", step="order.place")
    pending.emit(
        "shop.inventory.InventoryReserved", Role.STEP, "inventory", step="inventory.reserve"
    )

    refund = writer("refund", 3_000, saga="Refund")
    refund.emit("shop.refunds.RefundRequested", Role.START, "payment", step="payment.refund")
    refund.emit("shop.refunds.RefundCompleted", Role.COMPLETED, "payment")

    for saga in (done, comp, pending, refund):
        tracker.feed_many(saga.records)
    return Sample(
        completed=done.correlation_id,
        compensated=comp.correlation_id,
        pending=pending.correlation_id,
        refund=refund.correlation_id,
        pending_writer=pending,
        declined_event_id=declined.event_id,
    )


def new_tracker() -> Tracker:
    """Return a Tracker that keeps JSON payloads and never calls a saga stuck on its own."""
    return Tracker(decode=json.loads, default_deadline_s=10**9)
