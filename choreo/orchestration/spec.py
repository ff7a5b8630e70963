"""What an orchestrated saga declares: its steps, their commands, replies and compensations.

:class:`SagaPlan` is the declared data and the questions the engine, the fold and the
checks ask of it (groups of steps, compensations, step ids); the decorators that fill it
are :class:`~choreo.orchestration.declaration.Orchestrator`'s. Nothing here depends on
the engine, so every other module of the package can read a plan.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from choreo.choreography.service import Saga, StepKind
from choreo.errors import ConfigurationError
from choreo.model.events import Event

__all__ = [
    "Builder",
    "CompensationDef",
    "CompensationOrder",
    "CompensationPolicy",
    "SagaPlan",
    "StepDef",
]

Builder = Callable[[Any], Event]
"""A declared function: builds a command (or the terminal event) from the saga's run."""


class CompensationOrder(enum.StrEnum):
    """In which order completed steps are undone."""

    REVERSE = "reverse"
    """One at a time, the last completed step first (the saga guarantee's C_j..C_1)."""
    PARALLEL = "parallel"
    """All compensation commands at once (only for compensations independent of each other)."""


@dataclass(frozen=True, slots=True)
class CompensationPolicy:
    """How an orchestrator compensates: the order, and how often a compensation is sent.

    A compensation that gets no reply before its deadline is sent again (a new command
    id, so a participant that dead-lettered the first one tries again), up to
    ``attempts`` sendings; then the saga ends *compensation failed*
    (``choreo.SagaCompensationFailed``) and a human must finish undoing it.
    """

    order: CompensationOrder = CompensationOrder.REVERSE
    attempts: int = 3

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError("CompensationPolicy.attempts must be at least 1")


@dataclass(slots=True)
class CompensationDef:
    """The compensation of one step: the command that undoes it and its success replies."""

    name: str
    command: type[Event]
    success: tuple[type[Event], ...]
    build: Builder = field(repr=False)
    deadline: float


@dataclass(slots=True)
class StepDef:
    """One orchestrated step: its command, replies, class, deadline and parallel group."""

    name: str
    kind: StepKind
    command: type[Event]
    success: tuple[type[Event], ...]
    failure: tuple[type[Event], ...]
    build: Builder = field(repr=False)
    deadline: float
    group: int
    parallel: str | None = None
    compensation: CompensationDef | None = None

    @property
    def compensatable(self) -> bool:
        """True for a compensatable step (a ``step``, not the pivot or a retriable one)."""
        return self.kind is StepKind.COMPENSATABLE


class SagaPlan:
    """The declaration of one orchestrated ``saga``: its steps in order and their undoing.

    ``name`` is the orchestrator's service name; ``deadline`` the default seconds a step
    (or a compensation) may take to reply; ``compensation`` the :class:`CompensationPolicy`.
    """

    def __init__(
        self,
        name: str,
        *,
        saga: Saga,
        deadline: float = 30.0,
        compensation: CompensationPolicy | None = None,
    ) -> None:
        if deadline <= 0:
            raise ConfigurationError(f"orchestrator {name}: deadline must be positive")
        self.name = name
        self.saga = saga
        self.deadline = deadline
        self.policy = compensation or CompensationPolicy()
        self.steps: list[StepDef] = []
        self.start_compensation: CompensationDef | None = None
        self._completed: Builder | None = None
        self._failed: Builder | None = None

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}({self.name!r}, saga={self.saga.name!r}, steps={self.step_names})"

    @property
    def step_names(self) -> list[str]:
        """Return the steps' names in declaration order."""
        return [step.name for step in self.steps]

    def step_id(self, step: str) -> str:
        """Return the step header value of an orchestrated step: ``orchestrator.step``."""
        return f"{self.name}.{step}"

    # --- what the engine and the checks read ---------------------------------------

    def build_completed(self, run: Any) -> Event:
        """Return the completed event of ``run``."""
        if self._completed is None:  # pragma: no cover - checked when built
            raise ConfigurationError(f"orchestrator {self.name} declares no @completed")
        return self._completed(run)

    def build_failed(self, run: Any) -> Event:
        """Return the failed event of ``run``."""
        if self._failed is None:  # pragma: no cover - checked when built
            raise ConfigurationError(f"orchestrator {self.name} declares no @failed")
        return self._failed(run)

    def groups(self) -> list[list[StepDef]]:
        """Return the steps in their groups, in order (a step alone is a group of one)."""
        groups: list[list[StepDef]] = []
        for step in self.steps:
            if step.group == len(groups):
                groups.append([])
            groups[step.group].append(step)
        return groups

    def compensations(self) -> list[tuple[str, CompensationDef]]:
        """Return (step name, compensation) of every step with one, start's as ``""``."""
        found = [(s.name, s.compensation) for s in self.steps if s.compensation is not None]
        pairs: list[tuple[str, CompensationDef]] = [(n, c) for n, c in found if c is not None]
        if self.start_compensation is not None:
            pairs.append(("", self.start_compensation))
        return pairs
