"""One orchestrated saga's state: a fold of the events the orchestrator sent and received.

:class:`SagaRun` records *sets*: the ids of the commands sent per step, the replies
received, the timeouts emitted, the deadline notices seen. Applying the same event twice,
or the events in another order, gives the same run, so a run rebuilt from Kafka's topics
(read in any interleaving) equals the one the orchestrator had before it stopped.

Outcomes are derived, never stored: a step whose timeout the orchestrator emitted is
*timed out* whatever replies exist (a reply after it is late: recorded, ignored); else a
success reply makes it *succeeded*, a failure reply *failed*. :func:`decide` is then a
function of the run alone (level-triggered): it returns what is missing now (the next
commands, a timeout, a compensation, the terminal event), so handling an event again, or
after a restart, never sends anything the log already holds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from choreo.choreography.service import StepKind
from choreo.model.events import Event
from choreo.orchestration.spec import CompensationOrder

if TYPE_CHECKING:
    from choreo.orchestration.spec import SagaPlan, StepDef

__all__ = ["Action", "ActionKind", "Outcome", "Phase", "SagaRun", "StepRun", "decide", "undo_order"]


class Outcome(enum.StrEnum):
    """Where one step is."""

    UNSENT = "unsent"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"


class Phase(enum.StrEnum):
    """Where one orchestrated saga is."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATION_FAILED = "compensation-failed"

    @property
    def is_terminal(self) -> bool:
        """True once the saga's terminal event was emitted."""
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.COMPENSATION_FAILED)


@dataclass(slots=True)
class StepRun:
    """What happened to one step (or to the start's compensation, step ``""``)."""

    commands: dict[str, int] = field(default_factory=dict)
    """Forward command id -> produced-at ms."""
    successes: dict[str, Event | None] = field(default_factory=dict)
    failures: dict[str, Event | None] = field(default_factory=dict)
    timed_out: bool = False
    overdue: set[int] = field(default_factory=set)
    """Attempts of the forward command whose deadline notice was seen."""
    undo_commands: dict[str, int] = field(default_factory=dict)
    """Compensation command id -> produced-at ms."""
    undone: set[str] = field(default_factory=set)
    """Ids of the compensation's success replies."""
    undo_overdue: set[int] = field(default_factory=set)
    late: set[str] = field(default_factory=set)
    """Ids of replies that came after the step timed out (recorded, ignored)."""

    @property
    def outcome(self) -> Outcome:
        """Return the step's outcome (a timeout wins over any reply)."""
        if self.timed_out:
            return Outcome.TIMED_OUT
        if self.successes:
            return Outcome.SUCCEEDED
        if self.failures:
            return Outcome.FAILED
        return Outcome.SENT if self.commands else Outcome.UNSENT

    @property
    def attempt(self) -> int:
        """Return how many times the forward command was sent."""
        return len(self.commands)

    @property
    def undo_attempt(self) -> int:
        """Return how many times the compensation command was sent."""
        return len(self.undo_commands)

    @property
    def sent_at_ms(self) -> int:
        """Return when the forward command was last sent (0 when never)."""
        return max(self.commands.values(), default=0)

    @property
    def undo_sent_at_ms(self) -> int:
        """Return when the compensation command was last sent (0 when never)."""
        return max(self.undo_commands.values(), default=0)

    def reply(self) -> Event | None:
        """Return a success reply (the first by id, so the choice never depends on order)."""
        for key in sorted(self.successes):
            if self.successes[key] is not None:
                return self.successes[key]
        return None


@dataclass(slots=True)
class SagaRun:
    """One saga as the orchestrator knows it; builders read it (``run.start``, ``run.reply``)."""

    saga: str
    correlation_id: str
    start: Event | None = None
    start_id: str | None = None
    steps: dict[str, StepRun] = field(default_factory=dict)
    terminal: dict[str, str] = field(default_factory=dict)
    """Id -> event type of the terminal events the orchestrator emitted."""
    emitted: set[str] = field(default_factory=set)
    """Ids of the orchestrator's own events of this saga (folded from the log or sent)."""
    gave_up: bool = False
    completed: bool = False
    failure: Event | None = None
    """The first failure reply or timeout seen (for the failed event's builder)."""

    def step(self, name: str) -> StepRun:
        """Return (creating) the run of step ``name`` (``""``: the start's compensation)."""
        run = self.steps.get(name)
        if run is None:
            run = self.steps[name] = StepRun()
        return run

    def reply(self, step: object) -> Event | None:
        """Return the success reply of ``step`` (its function or name), None if none yet."""
        name = step if isinstance(step, str) else getattr(step, "__name__", "")
        found = self.steps.get(name)
        return None if found is None else found.reply()

    def outcome(self, name: str) -> Outcome:
        """Return step ``name``'s outcome."""
        found = self.steps.get(name)
        return Outcome.UNSENT if found is None else found.outcome

    @property
    def phase(self) -> Phase:
        """Return where the saga is."""
        if self.terminal:
            if self.gave_up:
                return Phase.COMPENSATION_FAILED
            return Phase.COMPLETED if self.completed else Phase.FAILED
        failing = any(s.outcome in (Outcome.FAILED, Outcome.TIMED_OUT) for s in self.steps.values())
        return Phase.COMPENSATING if failing else Phase.RUNNING


class ActionKind(enum.StrEnum):
    """What :func:`decide` asks the orchestrator to emit."""

    COMMAND = "command"
    RESEND = "resend"
    TIMEOUT = "timeout"
    COMPENSATE = "compensate"
    COMPLETED = "completed"
    FAILED = "failed"
    GIVE_UP = "give-up"


@dataclass(frozen=True, slots=True)
class Action:
    """One thing to emit: its kind and the step it concerns (``""``: the saga's start)."""

    kind: ActionKind
    step: str = ""


def decide(orch: SagaPlan, run: SagaRun) -> list[Action]:
    """Return what ``run`` is missing now, given the declarations of ``orch``.

    Running forward: a timeout for each step whose current command is overdue (a
    retriable step is re-sent instead), then the unsent commands of the first group not
    yet succeeded, or the completed event. Failing (a failure reply or a timeout): wait
    for the forward commands still in flight, then compensate the succeeded and
    timed-out compensatable steps (see :func:`_compensations`), then the failed event.
    """
    if run.start is None or run.terminal:
        return []
    actions = _overdue(orch, run)
    if actions:
        return actions
    if run.phase is Phase.COMPENSATING:
        return _compensations(orch, run)
    for group in orch.groups():
        if all(run.outcome(s.name) is Outcome.SUCCEEDED for s in group):
            continue
        unsent = [s.name for s in group if run.outcome(s.name) is Outcome.UNSENT]
        return [Action(ActionKind.COMMAND, name) for name in unsent]
    return [Action(ActionKind.COMPLETED)]


def _overdue(orch: SagaPlan, run: SagaRun) -> list[Action]:
    """Return a timeout (or a resend) for every forward command whose deadline passed."""
    actions = []
    for step in orch.steps:
        state = run.steps.get(step.name)
        if state is None or state.outcome is not Outcome.SENT:
            continue
        if state.attempt not in state.overdue:
            continue
        kind = ActionKind.RESEND if step.kind is StepKind.RETRIABLE else ActionKind.TIMEOUT
        actions.append(Action(kind, step.name))
    return actions


def undo_order(orch: SagaPlan, run: SagaRun) -> list[StepDef | None]:
    """Return the steps to compensate, in order (None: the start), last completed first.

    Succeeded and timed-out compensatable steps, in reverse declaration order, then the
    start when a compensation undoes it.
    """
    found: list[StepDef | None] = []
    for step in reversed(orch.steps):
        if step.compensation is None:
            continue
        if run.outcome(step.name) in (Outcome.SUCCEEDED, Outcome.TIMED_OUT):
            found.append(step)
    if orch.start_compensation is not None:
        found.append(None)
    return found


def _compensations(orch: SagaPlan, run: SagaRun) -> list[Action]:
    """Return the next compensations, resends, a give-up or the failed event.

    In reverse order one compensation at a time; in parallel every step's at once, and
    the start's once they are all done.
    """
    if any(run.outcome(s.name) is Outcome.SENT for s in orch.steps):
        return []  # a forward step is in flight: its reply (or timeout) decides first
    parallel = orch.policy.order is CompensationOrder.PARALLEL
    actions: list[Action] = []
    waiting = False  # an earlier compensation is not done yet
    for step in undo_order(orch, run):
        name = "" if step is None else step.name
        state = run.step(name)
        if state.undone:
            continue
        if step is None and waiting:
            break  # the start is undone last, in parallel mode too
        waiting = True
        if not state.undo_commands:
            actions.append(Action(ActionKind.COMPENSATE, name))
        elif state.undo_attempt in state.undo_overdue:
            if state.undo_attempt >= orch.policy.attempts:
                return [Action(ActionKind.GIVE_UP, name)]
            actions.append(Action(ActionKind.COMPENSATE, name))
        if not parallel:
            return actions
    if actions or not _all_undone(orch, run):
        return actions
    return [Action(ActionKind.FAILED)]


def _all_undone(orch: SagaPlan, run: SagaRun) -> bool:
    """Return whether every step to undo (the start included) is undone."""
    return all(run.step("" if s is None else s.name).undone for s in undo_order(orch, run))
