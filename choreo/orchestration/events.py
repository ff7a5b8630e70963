"""choreo's own events of orchestrated sagas (schemas shipped in choreo's built-in schemas).

- :class:`DeadlinePassed`: the orchestrator's deadline watcher noticed that a command got
  no reply in time. Role ``notice``: it moves nothing by itself; the orchestrator's handler
  decides (a timeout, a resend, or nothing because the reply came first).
- :class:`SagaCompensationFailed`: role ``failed``, the terminal event of a saga whose
  compensation got no reply after every attempt; the tracker shows it *compensation failed*.

An orchestrator's step timeout is the tracker's :class:`~choreo.events.SagaTimedOut`
(role ``failure``), so late replies are marked late in the trace like in choreography.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final

from choreo.model.events import Event, SagaTimedOut

__all__ = [
    "DEADLINE_PASSED",
    "SAGA_COMPENSATION_FAILED",
    "DeadlinePassed",
    "SagaCompensationFailed",
    "SagaTimedOut",
]

DEADLINE_PASSED: Final = "choreo.DeadlinePassed"
SAGA_COMPENSATION_FAILED: Final = "choreo.SagaCompensationFailed"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlinePassed(Event):
    """A command of an orchestrated saga got no reply before its step's deadline."""

    __avro_name__: ClassVar[str] = DEADLINE_PASSED

    saga: str
    """Name of the saga."""
    correlation_id: str
    """Correlation id of the saga."""
    step: str
    """The orchestrated step (``orchestrator.step``) whose reply is overdue."""
    compensating: bool
    """True when the overdue command is the step's compensation."""
    attempt: int
    """Which sending of the command is overdue (1 for the first)."""
    deadline_ms: int
    """The step's deadline, in milliseconds after the command."""
    detected_at: int
    """When the watcher noticed, in milliseconds since the epoch (UTC)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaCompensationFailed(Event):
    """An orchestrated saga's compensation got no reply after every attempt: a human is needed."""

    __avro_name__: ClassVar[str] = SAGA_COMPENSATION_FAILED

    saga: str
    """Name of the saga."""
    correlation_id: str
    """Correlation id of the saga."""
    step: str
    """The orchestrated step (``orchestrator.step``) whose compensation failed."""
    attempts: int
    """How many times the compensation command was sent."""
    pending: list[str] = field(default_factory=list)
    """The steps still to be undone, in the order they would have been."""
