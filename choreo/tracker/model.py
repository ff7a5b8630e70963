"""The tracker's data model: one saga's observed events, its state and what is wrong with it.

The fold (:mod:`choreo.tracker.fold`) turns records into these objects; the CLI and the
web viewer only read them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from choreo.model.envelope import Role

__all__ = [
    "DeadLetterNote",
    "SagaState",
    "SagaStatus",
    "SagaTrace",
    "TraceEvent",
    "Violation",
]


class SagaState(enum.StrEnum):
    """Where a saga is, folded from its events' roles alone (see :mod:`choreo.tracker.fold`)."""

    STARTED = "Started"
    """The saga's first event was seen."""
    PENDING = "Pending"
    """Forward steps are running; waiting for the next one."""
    COMPENSATING = "Compensating"
    """A failure was seen; completed steps are being undone in reverse order."""
    COMPLETED = "Completed"
    """Every step succeeded."""
    FAILED = "Failed"
    """The saga failed and every completed step was compensated."""

    @property
    def is_terminal(self) -> bool:
        """True for Completed and Failed."""
        return self in (SagaState.COMPLETED, SagaState.FAILED)


class SagaStatus(enum.StrEnum):
    """What an operator sees first: the state, unless something needs attention.

    Precedence: violated > compensation failed > stuck > the folded state.
    """

    STARTED = "Started"
    PENDING = "Pending"
    COMPENSATING = "Compensating"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STUCK = "Stuck"
    """No expected next event within the step's deadline."""
    COMPENSATION_FAILED = "CompensationFailed"
    """A compensation did not succeed within its budget: a human is needed."""
    VIOLATED = "Violated"
    """The observed history breaks the saga guarantee."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One breach of the saga guarantee, explained.

    ``code`` is stable (e.g. ``compensation-without-step``, ``step-after-compensation``,
    ``completed-after-failure``, ``compensation-order``, ``event-after-terminal``,
    ``double-terminal``); ``message`` says what happened in words; ``event_id`` points at
    the offending event.
    """

    code: str
    message: str
    event_id: str | None = None


class TraceEvent(NamedTuple):
    """One observed event of a saga, with where it was read from.

    A named tuple rather than a dataclass: the tracker builds one per record it reads,
    and ``tuple.__new__(TraceEvent, values)`` costs a fifth of a frozen dataclass's
    constructor. Use ``event._replace(...)`` for a changed copy.
    """

    event_id: str
    event_type: str
    role: Role
    service: str
    produced_at_ms: int
    causation_id: str | None = None
    step: str | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    late: bool = False
    """True when the event arrived after the saga had timed out or ended."""


class DeadLetterNote(NamedTuple):
    """A service dead-lettered one of the saga's records: what, where, when and why."""

    event_id: str
    """The dead-lettered event's id (empty when its envelope had none)."""
    event_type: str
    reason: str
    """The reason code, e.g. ``undecodable`` or ``handler-failed``."""
    message: str
    """The reason header in full: ``<reason>: <error message>`` (bounded)."""
    error_class: str
    service: str
    """The service that gave up on the record."""
    failed_at_ms: int | None
    source: str
    """Where the service read the record: ``topic/partition@offset``."""
    where: str
    """Where the dead letter itself was read: ``topic/partition@offset``."""
    needs_human: bool


@dataclass(slots=True)
class SagaTrace:
    """Everything known about one saga (one correlation id).

    ``events`` are in causal order (an event after the one that caused it; ties by
    produced-at time, then event id), whatever order the partitions delivered them in.
    """

    correlation_id: str
    saga: str = ""
    state: SagaState = SagaState.STARTED
    events: list[TraceEvent] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    stuck: bool = False
    compensation_failed: bool = False
    timed_out: bool = False
    deadline_ms: int | None = None
    """When the next event is due (epoch ms), while the saga is not terminal."""
    dead_letters: list[DeadLetterNote] = field(default_factory=list, compare=False)
    """The saga's records that services dead-lettered, in the order they were read.

    Kept in memory by the tracker that read them (not in its checkpoint), so not part of
    a trace's equality."""

    @property
    def status(self) -> SagaStatus:
        """Return what an operator should see first (see :class:`SagaStatus`)."""
        if self.violations:
            return SagaStatus.VIOLATED
        if self.compensation_failed:
            return SagaStatus.COMPENSATION_FAILED
        if self.stuck:
            return SagaStatus.STUCK
        return SagaStatus(self.state.value)

    @property
    def started_at_ms(self) -> int | None:
        """Return the produced-at time of the first event, or None when there is none."""
        return self.events[0].produced_at_ms if self.events else None

    @property
    def ended_at_ms(self) -> int | None:
        """Return the produced-at time of the terminal event, or None while running."""
        for event in reversed(self.events):
            if event.role in (Role.COMPLETED, Role.FAILED):
                return event.produced_at_ms
        return None

    @property
    def duration_ms(self) -> int | None:
        """Return end minus start in milliseconds, or None while running."""
        start, end = self.started_at_ms, self.ended_at_ms
        return None if start is None or end is None else end - start
