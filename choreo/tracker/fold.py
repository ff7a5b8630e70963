"""The pure fold: one correlation id's set of events -> its :class:`SagaTrace`.

The fold is a function of the *set* of events, never of their arrival order: events are
deduplicated by event id and put in causal order (:func:`causal_order`), then a state
machine and the saga-guarantee checks run over that order. Reading partitions in any
interleaving, or reading an event twice, therefore gives the same trace.

States, from the role headers alone: ``start`` -> Started, ``step`` or
``command`` -> Pending, ``failure``/``compensate``/``compensation`` -> Compensating,
``completed`` -> Completed, ``failed`` -> Failed. Orchestrated sagas add the
orchestrator's requests: a ``command`` asks a participant to run a step (whose reply is
the ``step`` or ``failure`` event), a ``compensate`` asks it to undo one (reply:
``compensation``). The first terminal event decides a terminal state; notices never
change anything. Without a choreography Failed is taken from the terminal event as it
is; with one, a Failed saga with a completed compensatable step that was never
compensated is a ``compensation-missing`` violation.

Saga-guarantee checks (each a :class:`Violation` with a stable code, see :class:`Code`)
use causality, not clocks, wherever the log says how events relate:

- ``compensation-without-step``: a compensation names (``step`` header) a step never
  seen as a forward step (start or step event);
- ``step-after-compensation``: a forward step or command caused, directly or through
  other events, by a failure, a compensate command or a compensation;
- ``completed-after-failure``: a completed event ordered after a failure event;
- ``compensation-order``: compensation C(a) causally precedes C(b) although step a
  causally precedes step b (steps must be undone in reverse order; compensations of
  concurrent steps, or concurrent compensations, are not ordered and so never flagged);
- ``double-terminal``: a second completed/failed event;
- ``event-after-terminal``: a non-notice event ordered after the terminal event, unless
  it is *late*;
- ``compensation-missing``: see above (only with a choreography).

An event whose cause is not among the saga's events is not a violation: the cause may
be on a partition that was not read. After a timeout, a compensation of a step never seen
to complete is not a violation either: the step's outcome was unknown, so it is undone in
case it ran. A failed terminal event of type ``choreo.SagaCompensationFailed`` (an
orchestrator gave up compensating) marks the saga *compensation failed* and is not a
``compensation-missing`` violation.

A forward step (or failure) ordered after a timeout
failure (``choreo.SagaTimedOut``) without descending from it is marked ``late=True``:
it is shown as late, and is not by itself a violation.

Why one module of over 500 lines: the fold is one pass over a saga's events with one
state; its small helpers each name one rule of the saga guarantee, and spreading them
over modules would hide the order in which the rules apply.
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
    "COMPENSATION_FAILED_EVENT_TYPE",
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

COMPENSATION_FAILED_EVENT_TYPE: Final = "choreo.SagaCompensationFailed"
"""The event type of an orchestrator's terminal *compensation failed* event (role ``failed``)."""

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
_COMMAND, _COMPENSATE = Role.COMMAND, Role.COMPENSATE
_S_STARTED, _S_PENDING, _S_COMPENSATING, _S_COMPLETED, _S_FAILED = (
    SagaState.STARTED,
    SagaState.PENDING,
    SagaState.COMPENSATING,
    SagaState.COMPLETED,
    SagaState.FAILED,
)
_TERMINAL: Final = frozenset((Role.COMPLETED, Role.FAILED))
_UNDOING: Final = frozenset((Role.FAILURE, Role.COMPENSATION, Role.COMPENSATE))
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


class _Walk:
    """What one pass over a saga's events in causal order found (see :func:`_walk`).

    Start and step events are handled inline in :func:`_walk`'s loop (most events are);
    the others are recorded through :meth:`settle`, and events met after a timeout or
    after the terminal event are checked by :meth:`after_end`.
    """

    __slots__ = (
        "compensated",
        "compensations",
        "failure_seen",
        "forward_of",
        "gave_up",
        "last_active",
        "late_ids",
        "latest_ms",
        "state",
        "terminal",
        "timed_out_any",
        "timeout_ids",
        "violations",
    )

    def __init__(self, forward_of: dict[str, TraceEvent]) -> None:
        self.forward_of = forward_of  # step id -> its (first) forward event
        self.violations: list[Violation] = []
        self.state = _S_STARTED
        self.terminal: TraceEvent | None = None
        self.failure_seen: TraceEvent | None = None
        self.timeout_ids: set[str] = set()
        self.compensations: list[TraceEvent] = []
        self.compensated: set[str] = set()
        self.late_ids: list[int] = []  # positions in the order of events marked late
        self.last_active: TraceEvent | None = None
        self.latest_ms = -1
        self.timed_out_any = False  # the saga holds a timeout (anywhere in the order)
        self.gave_up = False  # an orchestrator ended the saga as compensation failed

    def settle(self, event: TraceEvent) -> None:
        """Record a failure, compensation, completed or failed event (not the state change)."""
        role, step = event.role, event.step
        if role is _FAILURE:
            if event.event_type == TIMEOUT_EVENT_TYPE:
                self.timeout_ids.add(event.event_id)
            if self.failure_seen is None:
                self.failure_seen = event
        elif role is _COMPENSATION:
            self.compensations.append(event)
            if step:
                self.compensated.add(step)
                if step not in self.forward_of and not self.timed_out_any:
                    self.violations.append(
                        Violation(
                            Code.COMPENSATION_WITHOUT_STEP,
                            f"compensation {_where(event)} undoes step {step!r}, "
                            "which never ran",
                            event.event_id,
                        )
                    )
        elif role is _COMPLETED:
            if self.failure_seen is not None:
                self.violations.append(
                    Violation(
                        Code.COMPLETED_AFTER_FAILURE,
                        f"completed event {_where(event)} after the failure "
                        f"{_where(self.failure_seen)}",
                        event.event_id,
                    )
                )
        elif role is _COMPENSATE:
            return
        else:  # failed: its step ends with the saga
            if event.event_type == COMPENSATION_FAILED_EVENT_TYPE:
                self.gave_up = True
            if step and step in self.forward_of:
                self.compensated.add(step)

    def after_end(
        self, index: int, event: TraceEvent, terminal: TraceEvent | None, *, timed: bool
    ) -> None:
        """Check an event met after a timeout failure or after the terminal event.

        A forward step or failure that does not descend from the timeout is marked late;
        any event but a late one after the terminal event is a violation.
        """
        late = bool(self.timeout_ids) and not timed and event.role in _MAY_BE_LATE
        if late:
            self.late_ids.append(index)
        if terminal is None:
            return
        if event.role in _TERMINAL:
            self.violations.append(
                Violation(
                    Code.DOUBLE_TERMINAL,
                    f"second terminal event {_where(event)} after {_where(terminal)}",
                    event.event_id,
                )
            )
        elif not late:
            self.violations.append(
                Violation(
                    Code.EVENT_AFTER_TERMINAL,
                    f"{event.role.value} event {_where(event)} after the terminal event "
                    f"{_where(terminal)}",
                    event.event_id,
                )
            )


def _forward_steps(order: list[TraceEvent]) -> dict[str, TraceEvent]:
    """Return each step id's first forward (start or step) event, in causal order."""
    forward_of: dict[str, TraceEvent] = {}
    for event in order:
        if event.role in _FORWARD:
            step = event.step
            if step and step not in forward_of:
                forward_of[step] = event
    return forward_of


def _descent(
    cause: str | None,
    by_id: Mapping[str, TraceEvent],
    undone_after: Mapping[str, bool],
    after_timeout: Mapping[str, bool],
    timeout_ids: set[str],
) -> tuple[bool, bool]:
    """Return whether an event descends from a failure/compensation, and from a timeout."""
    parent = by_id.get(cause) if cause is not None else None
    if parent is None:
        return False, False
    pid = parent.event_id
    return (
        undone_after.get(pid, False) or parent.role in _UNDOING,
        after_timeout.get(pid, False) or pid in timeout_ids,
    )


def _timed_out_any(order: list[TraceEvent]) -> bool:
    """Return whether any event is a timeout failure (the tracker's own)."""
    return any(e.role is _FAILURE and e.event_type == TIMEOUT_EVENT_TYPE for e in order)


def _ending(event: TraceEvent) -> tuple[TraceEvent | None, SagaState]:
    """Return the terminal event and the state after a first failure, compensation or end."""
    role = event.role
    if role is _COMPLETED:
        return event, _S_COMPLETED
    if role is _FAILED:
        return event, _S_FAILED
    return None, _S_COMPENSATING


def _walk(order: list[TraceEvent], by_id: Mapping[str, TraceEvent]) -> _Walk:
    """Run the state machine and the per-event checks over the events in causal order.

    One pass, with the common roles inline: this loop runs once per event the tracker
    folds, so a function call per event shows in the tracker's rate.
    """
    walk = _Walk(_forward_steps(order))
    violations, timeout_ids = walk.violations, walk.timeout_ids
    # after a timeout a step's outcome is unknown: undoing it is legitimate (see the docs)
    walk.timed_out_any = _timed_out_any(order)
    undone_after: dict[str, bool] = {}  # event id -> descends from a failure/compensation
    after_timeout: dict[str, bool] = {}  # event id -> descends from a timeout failure
    state = _S_STARTED
    terminal: TraceEvent | None = None
    last_active: TraceEvent | None = None
    latest_ms = -1
    undoing_seen = False  # until a failure or compensation, no event can descend from one
    for index, event in enumerate(order):
        role, produced = event.role, event.produced_at_ms
        undone = timed = False
        if undoing_seen:
            undone, timed = _descent(
                event.causation_id, by_id, undone_after, after_timeout, timeout_ids
            )
            undone_after[event.event_id] = undone
            after_timeout[event.event_id] = timed
        if role is _NOTICE:
            continue
        last_active = event
        if produced > latest_ms:  # noqa: PLR1730 - a call to max() costs more
            latest_ms = produced
        if timeout_ids or terminal is not None:
            walk.after_end(index, event, terminal, timed=timed)
        if role is _STEP or role is _START or role is _COMMAND:
            if undone:
                violations.append(
                    Violation(
                        Code.STEP_AFTER_COMPENSATION,
                        f"forward {role.value} {_where(event)} was caused by the saga's "
                        "failure or compensation: no step may run once compensation began",
                        event.event_id,
                    )
                )
            if role is not _START and state is _S_STARTED and terminal is None:
                state = _S_PENDING
            continue
        # failure, compensate, compensation, completed, failed
        undoing_seen |= role in _UNDOING
        walk.settle(event)
        if terminal is None:
            terminal, state = _ending(event)
    walk.state, walk.terminal = state, terminal
    walk.last_active, walk.latest_ms = last_active, latest_ms
    return walk


def _missing_compensation(walk: _Walk, facts: GraphFacts) -> Violation | None:
    """Return the violation of a failed saga whose compensatable steps were not all undone."""
    terminal = walk.terminal
    if walk.state is not _S_FAILED or terminal is None or walk.gave_up:
        return None
    missing = [
        step
        for step in walk.forward_of
        if step in facts.compensatable and step not in walk.compensated
    ]
    if not missing:
        return None
    names = ", ".join(repr(step) for step in missing)
    return Violation(
        Code.COMPENSATION_MISSING,
        f"the saga failed ({_where(terminal)}) but completed compensatable "
        f"step(s) {names} were never compensated",
        terminal.event_id,
    )


def _deadline_ms(
    walk: _Walk,
    order: list[TraceEvent],
    saga: str,
    facts: GraphFacts | None,
    default_deadline_ms: int,
) -> int | None:
    """Return when a running saga's next event is due (epoch ms); None once it ended."""
    if walk.terminal is not None or not order:
        return None
    basis = walk.last_active if walk.last_active is not None else order[-1]
    base_ms = max(walk.latest_ms, basis.produced_at_ms)
    if facts is None:
        return base_ms + default_deadline_ms
    return base_ms + facts.deadline_ms(basis.event_type, saga, default_deadline_ms)


def fold(
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
    walk = _walk(order, by_id)
    violations = walk.violations
    if len(walk.compensations) > 1:
        violations.extend(_order_violations(walk.compensations, walk.forward_of, by_id))
    if facts is not None:
        missing = _missing_compensation(walk, facts)
        if missing is not None:
            violations.append(missing)
    if walk.late_ids:
        order = list(order)
        for index in walk.late_ids:
            order[index] = order[index]._replace(late=True)
    deadline_ms = _deadline_ms(walk, order, saga, facts, default_deadline_ms)
    return SagaTrace(
        correlation_id=correlation_id,
        saga=saga,
        state=walk.state,
        events=order,
        violations=violations,
        stuck=now_ms is not None and deadline_ms is not None and now_ms > deadline_ms,
        compensation_failed=compensation_failed or walk.gave_up,
        timed_out=bool(walk.timeout_ids),
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
