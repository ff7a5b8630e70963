"""Register an orchestrator's handlers: which event each consumes and what it may emit.

One handler per reason to act, so the graph shows the orchestration's shape:

- ``begin`` consumes the saga's start and sends the first group's commands;
- ``<step>_replied`` consumes a step's replies and sends the next group's commands (or
  the completed event), its own group's missing commands, compensations or the failed
  event;
- ``<compensation>_replied`` consumes a compensation's replies and sends the next
  compensation or the failed event;
- ``deadline`` consumes ``choreo.DeadlinePassed`` and may send anything (a timeout, a
  resend, a compensation, ``choreo.SagaCompensationFailed``).

Every handler calls the same :class:`~choreo.orchestration.engine.Engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from choreo.choreography.service import Service, StepKind
from choreo.model.envelope import Role
from choreo.model.events import Event, SagaTimedOut, event_type_of
from choreo.orchestration.events import DeadlinePassed, SagaCompensationFailed

if TYPE_CHECKING:
    from choreo.orchestration.engine import Engine
    from choreo.orchestration.spec import SagaPlan, StepDef

__all__ = ["register_handlers"]


def _handler(engine: Engine, name: str) -> Callable[..., list[Event]]:
    def handler(event: Event, ctx: Any) -> list[Event]:
        return engine.handle(name, event, ctx)

    handler.__name__ = name
    handler.__qualname__ = name
    handler.__doc__ = f"Orchestrator handler {name}: fold the event, emit what is missing."
    return handler


def _unique(classes: Iterable[type[Event]]) -> list[type[Event]]:
    return list({event_type_of(c): c for c in classes}.values())


def register_handlers(
    orch: SagaPlan, service: Service, engine: Engine
) -> tuple[dict[str, Role], dict[str, str]]:
    """Register ``orch``'s handlers on ``service``; return its roles and command -> step maps."""
    groups = orch.groups()
    undo_commands = [comp.command for _, comp in orch.compensations()]
    ends_failed = [*orch.saga.failed]
    everything = _unique(
        [
            *(s.command for s in orch.steps),
            *undo_commands,
            *orch.saga.completed,
            *ends_failed,
            SagaTimedOut,
            SagaCompensationFailed,
        ]
    )

    def register(name: str, consumes: list[type[Event]], emits: list[type[Event]]) -> None:
        emitted = _unique(emits)
        engine.allow(name, {event_type_of(c) for c in emitted})
        service._register(
            StepKind.ORCHESTRATION,
            on=consumes,
            emits=emitted,
            fails_with=(),
            undoes=None,
            deadline=None,
            retry=None,
        )(_handler(engine, name))

    register("begin", [orch.saga.start], [*(s.command for s in groups[0]), *ends_failed])
    for step in orch.steps:
        register(
            f"{step.name}_replied", [*step.success, *step.failure], _after_step(orch, step, groups)
        )
    for _, comp in orch.compensations():
        register(f"{comp.name}_replied", list(comp.success), [*undo_commands, *ends_failed])
    register("deadline", [DeadlinePassed], everything)

    roles: dict[str, Role] = {event_type_of(s.command): Role.COMMAND for s in orch.steps}
    roles.update({event_type_of(c): Role.COMPENSATE for c in undo_commands})
    roles[event_type_of(SagaTimedOut)] = Role.FAILURE
    roles[event_type_of(SagaCompensationFailed)] = Role.FAILED
    roles.update({event_type_of(c): Role.COMPLETED for c in orch.saga.completed})
    roles.update({event_type_of(c): Role.FAILED for c in orch.saga.failed})
    step_of = {event_type_of(s.command): s.name for s in orch.steps}
    step_of.update({event_type_of(c.command): n or "start" for n, c in orch.compensations()})
    return roles, step_of


def _after_step(orch: SagaPlan, step: StepDef, groups: list[list[StepDef]]) -> list[type[Event]]:
    """Return what a reply of ``step`` may lead to (see the module docs)."""
    following = groups[step.group + 1] if step.group + 1 < len(groups) else []
    forward: list[type[Event]] = [s.command for s in groups[step.group]]
    forward.extend(s.command for s in following)
    if not following:
        forward.extend(orch.saga.completed)
    undo = [comp.command for _, comp in orch.compensations()]
    return [*forward, *undo, *orch.saga.failed]
