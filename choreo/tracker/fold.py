"""The pure fold: one correlation id's set of events -> its :class:`SagaTrace`.

The fold is a function of the *set* of events, never of their arrival order: events are
deduplicated by event id and put in causal order (:func:`causal_order`), then a state
machine and the saga-guarantee checks run over that order. Reading partitions in any
interleaving, or reading an event twice, therefore gives the same trace.

States (DESIGN §3), from the role headers alone: ``start`` -> Started, ``step`` ->
Pending, ``failure``/``compensation`` -> Compensating, ``completed`` -> Completed,
``failed`` -> Failed. The first terminal event decides a terminal state; notices never
change anything. Without a choreography Failed is taken from the terminal event as it
is; with one, a Failed saga with a completed compensatable step that was never
compensated is a ``compensation-missing`` violation.

Saga-guarantee checks (each a :class:`Violation` with a stable code, see :class:`Code`)
use causality, not clocks, wherever the log says how events relate:

- ``compensation-without-step``: a compensation names (``step`` header) a step never
  seen as a forward step (start or step event);
- ``step-after-compensation``: a forward step caused, directly or through other events,
  by a failure or a compensation;
- ``completed-after-failure``: a completed event ordered after a failure event;
- ``compensation-order``: compensation C(a) causally precedes C(b) although step a
  causally precedes step b (steps must be undone in reverse order; compensations of
  concurrent steps, or concurrent compensations, are not ordered and so never flagged);
- ``double-terminal``: a second completed/failed event;
- ``event-after-terminal``: a non-notice event ordered after the terminal event, unless
  it is *late*;
- ``compensation-missing``: see above (only with a choreography).

An event whose cause is not among the saga's events is not a violation: the cause may
be on a partition that was not read. A forward step (or failure) ordered after a timeout
failure (``choreo.SagaTimedOut``) without descending from it is marked ``late=True``:
it is shown as late, and is not by itself a violation.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Iterable, Mapping
from typing import Final

from choreo.model.envelope import Role
from choreo.tracker.graphfacts import GraphFacts
from choreo.tracker.model import SagaState, SagaTrace, TraceEvent, Violation

__all__ = [
    "DEFAULT_DEADLINE_MS",
    "TIMEOUT_EVENT_TYPE",
    "Code",
    "causal_order",
    "dedupe",
    "fold",
    "preferred",
]

TIMEOUT_EVENT_TYPE: Final = "choreo.SagaTimedOut"
"""The event type of the tracker's timeout failure (role ``failure``)."""

DEFAULT_DEADLINE_MS: Final = 30_000

_START, _STEP, _FAILURE, _COMPENSATION, _COMPLETED, _FAILED, _NOTICE = (
    Role.START,
    Role.STEP,
    Role.FAILURE,
    Role.COMPENSATION,
    Role.COMPLETED,
    Role.FAILED,
    Role.NOTICE,
)
_S_STARTED, _S_PENDING, _S_COMPENSATING, _S_COMPLETED, _S_FAILED = (
    SagaState.STARTED,
    SagaState.PENDING,
    SagaState.COMPENSATING,
    SagaState.COMPLETED,
    SagaState.FAILED,
)
_TERMINAL: Final = frozenset((Role.COMPLETED, Role.FAILED))
_UNDOING: Final = frozenset((Role.FAILURE, Role.COMPENSATION))
_FORWARD: Final = frozenset((Role.START, Role.STEP))
_MAY_BE_LATE: Final = frozenset((Role.START, Role.STEP, Role.FAILURE))
# TraceEvent is a named tuple: positions are faster to read than names in the hot loops
_TIME: Final = operator.itemgetter(TraceEvent._fields.index("produced_at_ms"))
_KEY: Final = operator.itemgetter(
    TraceEvent._fields.index("produced_at_ms"), TraceEvent._fields.index("event_id")
)


class Code:
    """The stable codes of saga-guarantee violations."""

    COMPENSATION_WITHOUT_STEP: Final = "compensation-without-step"
    STEP_AFTER_COMPENSATION: Final = "step-after-compensation"
    COMPLETED_AFTER_FAILURE: Final = "completed-after-failure"
    COMPENSATION_ORDER: Final = "compensation-order"
    DOUBLE_TERMINAL: Final = "double-terminal"
    EVENT_AFTER_TERMINAL: Final = "event-after-terminal"
    COMPENSATION_MISSING: Final = "compensation-missing"


def _where(event: TraceEvent) -> str:
    """Return a short description of an event for messages."""
    step = f" ({event.step})" if event.step else ""
    return f"{event.event_type}{step} from {event.service or '?'} [{event.event_id}]"


def preferred(a: TraceEvent, b: TraceEvent) -> TraceEvent:
    """Return which of two copies of one event id is kept (the same whatever the order).

    A duplicate (the same event id published twice) is kept once: the copy produced
    first, then the one at the smallest topic, partition and offset.
    """
    key_a = (a.produced_at_ms, a.topic, a.partition, a.offset)
    key_b = (b.produced_at_ms, b.topic, b.partition, b.offset)
    return a if key_a <= key_b else b


def dedupe(events: Iterable[TraceEvent]) -> dict[str, TraceEvent]:
    """Return the events keyed by event id, one copy per id (see :func:`preferred`)."""
    by_id: dict[str, TraceEvent] = {}
    for event in events:
        known = by_id.get(event.event_id)
        by_id[event.event_id] = event if known is None else preferred(known, event)
    return by_id


def causal_order(by_id: Mapping[str, TraceEvent]) -> list[TraceEvent]:
    """Return the events in causal order: every event after its cause, ties by time then id.

    This is Kahn's topological sort taking the smallest ``(produced_at, event_id)``
    among the events whose cause is placed (or unknown). It depends only on the set.
    Events caught in a causation cycle (corrupt data) go last, by time then id.
    """
    # Fast path: when the time order already puts every cause first, it *is* the order
    # Kahn's algorithm would produce (the smallest remaining event is always available).
    # Sorting on the time alone is cheaper; equal times then need their ids in order too.
    ordered = sorted(by_id.values(), key=_TIME)
    if _in_causal_order(ordered, by_id):
        return ordered
    ordered.sort(key=_KEY)
    if _in_causal_order(ordered, by_id):
        return ordered
    children: dict[str, list[TraceEvent]] = {}
    heap: list[tuple[int, str, TraceEvent]] = []
    for event in ordered:
        cause = event.causation_id
        if cause is not None and cause != event.event_id and cause in by_id:
            children.setdefault(cause, []).append(event)
        else:
            heap.append((event.produced_at_ms, event.event_id, event))
    heapq.heapify(heap)
    result: list[TraceEvent] = []
    while heap:
        event = heapq.heappop(heap)[2]
        result.append(event)
        for child in children.get(event.event_id, ()):
            heapq.heappush(heap, (child.produced_at_ms, child.event_id, child))
    if len(result) < len(by_id):
        done = {e.event_id for e in result}
        result.extend(e for e in ordered if e.event_id not in done)
    return result


def _in_causal_order(ordered: list[TraceEvent], by_id: Mapping[str, TraceEvent]) -> bool:
    """Return True when ``ordered`` is in (time, id) order and every cause comes first."""
    last_time: int | None = None
    last_id = ""
    for event_id, _, _, _, produced, cause, _, _, _, _, _ in ordered:
        if produced == last_time and event_id < last_id:
            return False
        last_time, last_id = produced, event_id
        if cause is not None:
            parent = by_id.get(cause)
            if parent is not None and (
                parent.produced_at_ms > produced
                or (parent.produced_at_ms == produced and parent.event_id >= event_id)
            ):
                return False
    return True


def _is_ancestor(ancestor: str, event: TraceEvent, by_id: Mapping[str, TraceEvent]) -> bool:
    """Return True when ``ancestor`` is on ``event``'s causation chain (within the saga)."""
    seen = 0
    cause = event.causation_id
    while cause is not None and seen <= len(by_id):
        if cause == ancestor:
            return True
        parent = by_id.get(cause)
        if parent is None:
            return False
        cause = parent.causation_id
        seen += 1
    return False


def fold(  # noqa: PLR0912, PLR0915 - one pass over the events; split, it gets slower
    correlation_id: str,
    events: Iterable[TraceEvent] | Mapping[str, TraceEvent],
    *,
    saga: str = "",
    facts: GraphFacts | None = None,
    default_deadline_ms: int = DEFAULT_DEADLINE_MS,
    compensation_failed: bool = False,
    now_ms: int | None = None,
) -> SagaTrace:
    """Return the trace of one saga from the set of its events (order and copies ignored).

    ``facts`` (from the choreography) adds per-step deadlines and the compensatable
    steps; ``compensation_failed`` comes from dead-letter records that ask for a human;
    ``now_ms``, when given, marks the saga stuck if its next event is overdue.
    """
    by_id = events if type(events) is dict or isinstance(events, Mapping) else dedupe(events)
    order = causal_order(by_id)
    violations: list[Violation] = []
    state = _S_STARTED
    terminal: TraceEvent | None = None
    failure_seen: TraceEvent | None = None
    timeout_ids: set[str] = set()
    undone_after: dict[str, bool] = {}  # event id -> descends from a failure/compensation
    after_timeout: dict[str, bool] = {}  # event id -> descends from a timeout failure
    forward_of: dict[str, TraceEvent] = {}  # step id -> its (first) forward event
    compensations: list[TraceEvent] = []
    compensated: set[str] = set()
    late_ids: list[int] = []
    last_active: TraceEvent | None = None
    latest_ms = -1

    for event in order:
        if event.role in _FORWARD:
            step = event.step
            if step and step not in forward_of:
                forward_of[step] = event

    undoing_seen = False  # until a failure or compensation, no event can descend from one
    for index, event in enumerate(order):
        eid, event_type, role, _, produced, cause, step, _, _, _, _ = event
        undone = timed = False
        if undoing_seen:
            parent = by_id.get(cause) if cause is not None else None
            if parent is not None:
                pid = parent.event_id
                undone = undone_after.get(pid, False) or parent.role in _UNDOING
                timed = after_timeout.get(pid, False) or pid in timeout_ids
            undone_after[eid] = undone
            after_timeout[eid] = timed
        if role is _NOTICE:
            continue
        if role in _UNDOING:
            undoing_seen = True
        last_active = event
        if produced > latest_ms:  # noqa: PLR1730 - a call to max() costs more
            latest_ms = produced
        late = False
        if timeout_ids and not timed and role in _MAY_BE_LATE:
            late = True
            late_ids.append(index)

        if terminal is not None:
            if role in _TERMINAL:
                violations.append(
                    Violation(
                        Code.DOUBLE_TERMINAL,
                        f"second terminal event {_where(event)} after {_where(terminal)}",
                        eid,
                    )
                )
            elif not late:
                violations.append(
                    Violation(
                        Code.EVENT_AFTER_TERMINAL,
                        f"{role.value} event {_where(event)} after the terminal event "
                        f"{_where(terminal)}",
                        eid,
                    )
                )

        if role is _STEP or role is _START:
            if undone:
                violations.append(
                    Violation(
                        Code.STEP_AFTER_COMPENSATION,
                        f"forward {role.value} {_where(event)} was caused by the saga's "
                        "failure or compensation: no step may run once compensation began",
                        eid,
                    )
                )
            if terminal is None and state is _S_STARTED and role is _STEP:
                state = _S_PENDING
        elif role is _FAILURE:
            if event_type == TIMEOUT_EVENT_TYPE:
                timeout_ids.add(eid)
            if failure_seen is None:
                failure_seen = event
            if terminal is None:
                state = _S_COMPENSATING
        elif role is _COMPENSATION:
            compensations.append(event)
            if step:
                compensated.add(step)
                if step not in forward_of:
                    violations.append(
                        Violation(
                            Code.COMPENSATION_WITHOUT_STEP,
                            f"compensation {_where(event)} undoes step {step!r}, "
                            "which never ran",
                            eid,
                        )
                    )
            if terminal is None:
                state = _S_COMPENSATING
        elif role is _COMPLETED:
            if failure_seen is not None:
                violations.append(
                    Violation(
                        Code.COMPLETED_AFTER_FAILURE,
                        f"completed event {_where(event)} after the failure "
                        f"{_where(failure_seen)}",
                        eid,
                    )
                )
            if terminal is None:
                terminal, state = event, _S_COMPLETED
        elif role is _FAILED:
            if step and step in forward_of:
                compensated.add(step)
            if terminal is None:
                terminal, state = event, _S_FAILED

    if len(compensations) > 1:
        violations.extend(_order_violations(compensations, forward_of, by_id))
    if facts is not None and state is _S_FAILED and terminal is not None:
        missing = [
            step
            for step in forward_of
            if step in facts.compensatable and step not in compensated
        ]
        if missing:
            names = ", ".join(repr(step) for step in missing)
            violations.append(
                Violation(
                    Code.COMPENSATION_MISSING,
                    f"the saga failed ({_where(terminal)}) but completed compensatable "
                    f"step(s) {names} were never compensated",
                    terminal.event_id,
                )
            )

    if late_ids:
        order = list(order)
        for index in late_ids:
            order[index] = order[index]._replace(late=True)

    deadline_ms: int | None = None
    if terminal is None and order:
        basis = last_active if last_active is not None else order[-1]
        base_ms = max(latest_ms, basis.produced_at_ms)
        if facts is not None:
            deadline_ms = base_ms + facts.deadline_ms(basis.event_type, saga, default_deadline_ms)
        else:
            deadline_ms = base_ms + default_deadline_ms
    return SagaTrace(
        correlation_id=correlation_id,
        saga=saga,
        state=state,
        events=order,
        violations=violations,
        stuck=now_ms is not None and deadline_ms is not None and now_ms > deadline_ms,
        compensation_failed=compensation_failed,
        timed_out=bool(timeout_ids),
        deadline_ms=deadline_ms,
    )


def _order_violations(
    compensations: list[TraceEvent],
    forward_of: Mapping[str, TraceEvent],
    by_id: Mapping[str, TraceEvent],
) -> list[Violation]:
    """Return a violation for each compensation pair that undoes steps in forward order."""
    found: list[Violation] = []
    for later_index, later in enumerate(compensations):
        later_step = forward_of.get(later.step or "")
        if later_step is None:
            continue
        for earlier in compensations[:later_index]:
            earlier_step = forward_of.get(earlier.step or "")
            if earlier_step is None or earlier_step is later_step:
                continue
            if _is_ancestor(earlier.event_id, later, by_id) and _is_ancestor(
                earlier_step.event_id, later_step, by_id
            ):
                found.append(
                    Violation(
                        Code.COMPENSATION_ORDER,
                        f"compensation {_where(later)} of step {later.step!r} came after "
                        f"compensation {_where(earlier)} of step {earlier.step!r}, but "
                        f"{later.step!r} ran after {earlier.step!r}: steps must be undone "
                        "in reverse order",
                        later.event_id,
                    )
                )
    return found
