"""What ``choreo check`` verifies of an orchestrated saga, besides the choreography rules.

- ``orchestrated-step-not-compensated``: a compensatable step declares no compensation
  (declare ``@orchestrator.compensation(undoes=step, ...)``, or make it the pivot or a
  retriable step);
- ``command-without-participant``: no service reacts to a command or compensation
  command, so the step would always time out;
- ``reply-not-handled``: a participant's handler of a command may emit an event the step
  does not declare as a reply: the orchestrator would never hear it;
- ``reply-never-sent`` (warning): a declared reply no participant emits;
- ``participant-kind`` (warning): the participant's handler class does not match the
  step's (a compensatable step's command handled by a pivot, a compensation command by a
  forward step...).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from choreo.choreography.checks import Problem, ProblemCode, Severity
from choreo.choreography.graph import Choreography
from choreo.choreography.service import HandlerSpec, StepKind
from choreo.model.events import Event, event_type_of

if TYPE_CHECKING:
    from choreo.orchestration.spec import SagaPlan

__all__ = ["problems"]


def _problem(
    orch: SagaPlan,
    code: ProblemCode,
    step: str,
    text: str,
    *,
    event: str | None = None,
    severity: Severity = Severity.ERROR,
) -> Problem:
    return Problem(
        code,
        f"{orch.step_id(step)}: {text}",
        service=orch.name,
        handler=step,
        event=event,
        severity=severity,
    )


def problems(ch: Choreography, orch: SagaPlan) -> Iterator[Problem]:
    """Yield every problem of ``orch``'s declarations against the services of ``ch``."""
    for step in orch.steps:
        if step.compensatable and step.compensation is None:
            yield _problem(
                orch,
                ProblemCode.STEP_NOT_COMPENSATED,
                step.name,
                "compensatable step has no compensation (declare "
                f"@{orch.name}.compensation(undoes={step.name}, ...), or make it the pivot or "
                "a retriable step)",
            )
        yield from _exchange(ch, orch, step.name, step.command, (*step.success, *step.failure))
        yield from _kinds(ch, orch, step.name, step.command, step.kind)
        if step.compensation is not None:
            comp = step.compensation
            yield from _exchange(ch, orch, step.name, comp.command, comp.success)
            yield from _kinds(ch, orch, step.name, comp.command, StepKind.COMPENSATION)
    if orch.start_compensation is not None:
        comp = orch.start_compensation
        yield from _exchange(ch, orch, "start", comp.command, comp.success)
        yield from _kinds(ch, orch, "start", comp.command, StepKind.COMPENSATION)


def _participants(ch: Choreography, orch: SagaPlan, command: str) -> list[HandlerSpec]:
    return [spec for spec in ch.consumers(command) if spec.service != orch.name]


def _exchange(
    ch: Choreography,
    orch: SagaPlan,
    step: str,
    command: type[Event],
    replies: tuple[type[Event], ...],
) -> Iterator[Problem]:
    """Check that ``command`` has a participant whose every reply is one of ``replies``."""
    name = event_type_of(command)
    participants = _participants(ch, orch, name)
    if not participants:
        yield _problem(
            orch,
            ProblemCode.COMMAND_WITHOUT_PARTICIPANT,
            step,
            f"no service reacts to its command {name}: the step would always time out",
            event=name,
        )
        return
    declared = {event_type_of(cls) for cls in replies}
    sent: set[str] = set()
    for spec in participants:
        for emitted in spec.emitted_types:
            sent.add(emitted)
            if emitted not in declared:
                yield _problem(
                    orch,
                    ProblemCode.REPLY_NOT_HANDLED,
                    step,
                    f"{spec.step_id} answers {name} with {emitted}, which the step does not "
                    "declare as a reply: the orchestrator would never hear it",
                    event=emitted,
                )
    for missing in sorted(declared - sent):
        yield _problem(
            orch,
            ProblemCode.REPLY_NEVER_SENT,
            step,
            f"declares the reply {missing}, which no participant of {name} emits",
            event=missing,
            severity=Severity.WARNING,
        )


def _kinds(
    ch: Choreography, orch: SagaPlan, step: str, command: type[Event], kind: StepKind
) -> Iterator[Problem]:
    """Warn when a participant's handler class differs from the orchestrated step's."""
    name = event_type_of(command)
    for spec in _participants(ch, orch, name):
        if spec.kind is not kind and spec.kind is not StepKind.LISTENER:
            yield _problem(
                orch,
                ProblemCode.PARTICIPANT_KIND,
                step,
                f"{spec.step_id} handles {name} as a {spec.kind.value} handler, but the "
                f"orchestrated step is {kind.value}",
                event=name,
                severity=Severity.WARNING,
            )
