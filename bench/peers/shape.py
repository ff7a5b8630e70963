"""What a run checks and counts, per style of the saga: its services, topics, start, ends.

The choreographed saga (:mod:`bench.peers.choreography`) and the orchestrated one
(:mod:`bench.peers.orchestrated_impl`) run the same business outcomes (decided by the
order id) through different events and processes. A :class:`SagaShape` tells the harness
which processes to start, which topics to recreate, which start event to inject, and
what each service's state must be at the end of each saga.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bench.peers import choreography as ch

STATE_RANK: Final[Mapping[str, int]] = {
    "reserved": 0,
    "charged": 0,
    "created": 0,
    "unavailable": 1,
    "declined": 1,
    "dispatched": 1,
    "undispatchable": 1,
    "completed": 1,
    "failed": 1,
    "released": 2,
    "refunded": 2,
    "cancelled": 2,
}
"""How far along a service's state for one order is: with several replicas of a service,
the replicas' dicts are merged keeping the furthest state of each order."""


@dataclass(frozen=True, slots=True)
class SagaShape:
    """One style of the saga: processes, topics, the start event and the expected ends."""

    saga: str
    start_event: str
    services: tuple[str, ...]
    """One process per name (times the replicas, except for ``single`` ones)."""
    event_types: tuple[str, ...]
    """Every topic the run uses, by event type (also the topic name, before a prefix)."""
    final_states: Callable[[str], Mapping[str, str]]
    """Order id -> each service's state at the end of its saga."""
    events_of: Callable[[str], int]
    """Order id -> how many records its saga puts on Kafka (the start event included)."""
    start_datum: Callable[[str, int, int], dict[str, Any]]
    """(order id, index, created-at ms) -> the start event's datum."""
    single: frozenset[str] = field(default_factory=frozenset)
    """Services that run as exactly one process whatever the replica count."""

    def start_headers(self, order_id: str, event_id: str, now_ms: int) -> list[tuple[str, bytes]]:
        """Return the choreo headers of the start event of ``order_id`` (as the front end's)."""
        return [
            (ch.H_TYPE, self.start_event.encode()),
            (ch.H_ID, event_id.encode()),
            (ch.H_CID, order_id.encode()),
            (ch.H_SAGA, self.saga.encode()),
            (ch.H_ROLE, b"start"),
            (ch.H_SERVICE, b"order"),
            (ch.H_AT, str(now_ms).encode()),
            (ch.H_STEP, b"order.start"),
        ]


CHOREOGRAPHED: Final = SagaShape(
    saga=ch.SAGA,
    start_event=ch.ORDER_CREATED,
    services=tuple(ch.SUBSCRIPTIONS),
    event_types=(*ch.EVENT_TYPES, *(f"choreo.deadletter.{s}" for s in ch.SUBSCRIPTIONS)),
    final_states=lambda order_id: ch.FINAL_STATES[ch.expected_outcome(order_id)],
    events_of=lambda order_id: ch.EVENTS_PER_PATH[ch.expected_outcome(order_id)],
    start_datum=ch.order_created,
)
"""The choreography every peer implements (one topic per event type, four services)."""


def expected_state_counts(shape: SagaShape, order_ids: list[str]) -> dict[str, dict[str, int]]:
    """Return, per service, how many orders should end in each state."""
    counts: dict[str, dict[str, int]] = {}
    for order_id in order_ids:
        for service, state in shape.final_states(order_id).items():
            per = counts.setdefault(service, {})
            per[state] = per.get(state, 0) + 1
    return counts


def merge_states(parts: list[dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """Merge the state dicts of several processes, keeping each order's furthest state."""
    merged: dict[str, dict[str, str]] = {}
    for part in parts:
        for service, per_order in part.items():
            into = merged.setdefault(service, {})
            for order_id, state in per_order.items():
                known = into.get(order_id)
                if known is None or STATE_RANK.get(state, 0) >= STATE_RANK.get(known, 0):
                    into[order_id] = state
    return merged
