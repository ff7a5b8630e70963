"""The consistency checks of a choreography: what :func:`check` reports, one code per problem.

Problems reported by :func:`check`, one code each (all errors unless noted):

=========================== ================================================================
``missing-compensation``    a compensatable step that no compensation ``undoes``
``start-not-compensated``   *warning*: a saga that can fail, whose start no compensation
                            undoes (so the starting service never learns it failed). A saga
                            none of whose steps declares ``fails_with`` is not reported; nor
                            is one whose failure other compensations already end. Only a
                            warning because a saga started by an outside system has no
                            start step a service could undo.
``unknown-undone-step``     a compensation ``undoes`` a step that does not exist
``undoes-not-compensatable`` a compensation ``undoes`` a pivot, retriable, listener or
                            compensation
``undoes-other-service``    a compensation ``undoes`` a step of another service
``compensates-failed-step`` a compensation reacts to the failure of the very step it undoes
                            (that step never completed: nothing to undo)
``dead-end-event``          an emitted event nobody consumes that is neither a saga's
                            completed/failed event nor a notice
``never-emitted``           a consumed event no handler emits, that is neither a saga's start
                            event nor one choreo emits itself (``choreo.SagaTimedOut``)
``missing-schema``          an event type without a schema (only when schemas are given)
``unhandled-failure``       a failure event no compensation (nor a handler emitting a failed
                            event) consumes: the saga would hang
``no-failed-path``          a handled failure event from which no chain of handlers reaches a
                            failed event of its saga
``start-not-consumed``      a saga's start event no step consumes
``no-completion-path``      no chain of forward steps from a saga's start to a completed event
``retriable-before-pivot``  a retriable step that comes before its saga's pivot
``multiple-pivots``         a saga with more than one pivot
``step-after-pivot``        a compensatable step after the pivot (it could never undo the
                            pivot; steps after the pivot must be retriable)
``saga-not-joined``         a handler emits a saga's completed/failed event but its service
                            does not join that saga (nor another saga ending with the same
                            event), so the runtime cannot mark it terminal
``compensation-chain-       the chain of compensations a failure event triggers never undoes
incomplete``                a step that completed before the failure (or the saga's start)
``compensation-chain-order`` the chain a failure event triggers undoes the completed steps
                            out of reverse order (a step before a later one, or both at once)
=========================== ================================================================

The two chain problems come from :func:`choreo.choreography.chains.compensation_chains`,
which derives, for every failure event, the compensations it triggers level by level; the
problem's :attr:`Problem.chain` holds that chain as text, and its message says what the
chain should have undone, in which order.

A service may check itself too: when it has a ``choreography_problems(choreography)``
method (an orchestrator's service does, see :mod:`choreo.orchestration.check`), its
problems are reported with the others.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from choreo.avro.lookup import has_schema_predicate
from choreo.choreography.chains import compensation_chains
from choreo.choreography.graph import BUILTIN_EVENTS, BUILTIN_NAMESPACE, Choreography
from choreo.choreography.service import HandlerSpec, Saga, StepKind
from choreo.errors import ChoreographyError
from choreo.model.envelope import Role
from choreo.model.events import event_type_of

__all__ = ["Problem", "ProblemCode", "Severity", "check", "validate"]


class Severity(enum.StrEnum):
    """How bad a problem is: errors make ``choreo check`` fail, warnings only inform."""

    ERROR = "error"
    WARNING = "warning"


class ProblemCode(enum.StrEnum):
    """The kinds of problem :func:`check` reports (see the module docstring)."""

    MISSING_COMPENSATION = "missing-compensation"
    START_NOT_COMPENSATED = "start-not-compensated"
    UNKNOWN_UNDONE_STEP = "unknown-undone-step"
    UNDOES_NOT_COMPENSATABLE = "undoes-not-compensatable"
    UNDOES_OTHER_SERVICE = "undoes-other-service"
    COMPENSATES_FAILED_STEP = "compensates-failed-step"
    DEAD_END_EVENT = "dead-end-event"
    NEVER_EMITTED = "never-emitted"
    MISSING_SCHEMA = "missing-schema"
    UNHANDLED_FAILURE = "unhandled-failure"
    NO_FAILED_PATH = "no-failed-path"
    START_NOT_CONSUMED = "start-not-consumed"
    NO_COMPLETION_PATH = "no-completion-path"
    RETRIABLE_BEFORE_PIVOT = "retriable-before-pivot"
    MULTIPLE_PIVOTS = "multiple-pivots"
    STEP_AFTER_PIVOT = "step-after-pivot"
    SAGA_NOT_JOINED = "saga-not-joined"
    STEP_NOT_COMPENSATED = "orchestrated-step-not-compensated"
    COMMAND_WITHOUT_PARTICIPANT = "command-without-participant"
    REPLY_NOT_HANDLED = "reply-not-handled"
    REPLY_NEVER_SENT = "reply-never-sent"
    PARTICIPANT_KIND = "participant-kind"
    CHAIN_INCOMPLETE = "compensation-chain-incomplete"
    CHAIN_ORDER = "compensation-chain-order"


@dataclass(frozen=True, slots=True)
class Problem:
    """One inconsistency found by :func:`check`; ``message`` starts with ``service.handler``.

    ``service``, ``handler`` and ``event`` say where it is, when that is known (a
    saga-level problem has no handler); ``chain`` is the compensation chain a failure
    event triggers, as text, for the chain problems (empty otherwise).
    """

    code: ProblemCode
    message: str
    service: str | None = None
    handler: str | None = None
    event: str | None = None
    severity: Severity = Severity.ERROR
    chain: str = ""

    def __str__(self) -> str:
        return f"{self.severity.value} {self.code.value}: {self.message}"


def check(choreography: Choreography, schemas: object | None = None) -> list[Problem]:
    """Return every problem of ``choreography`` (an empty list when it is consistent).

    ``schemas`` enables the ``missing-schema`` check: a schema registry with a ``names()``
    method, any container of full names (``in`` works), or a directory of ``*.avsc`` files.
    Problems come sorted: errors first, then by service, handler and code.
    """
    problems: list[Problem] = []
    for rule in _RULES:
        problems.extend(rule(choreography))
    if schemas is not None:
        problems.extend(_missing_schemas(choreography, has_schema_predicate(schemas)))
    problems.sort(
        key=lambda p: (
            p.severity is not Severity.ERROR,
            p.service or "",
            p.handler or "",
            p.code.value,
            p.event or "",
        )
    )
    return problems


def validate(choreography: Choreography, schemas: object | None = None) -> list[Problem]:
    """Return the warnings of ``choreography``; raise ChoreographyError if it has errors.

    The error's message lists each error on its own line.
    """
    problems = check(choreography, schemas)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        lines = "\n".join(f"  {p.code.value}: {p.message}" for p in errors)
        raise ChoreographyError(f"the choreography has {len(errors)} problem(s):\n{lines}")
    return problems


def _problem(
    code: ProblemCode,
    spec: HandlerSpec | None,
    text: str,
    *,
    event: str | None = None,
    service: str | None = None,
    severity: Severity = Severity.ERROR,
) -> Problem:
    if spec is not None:
        return Problem(
            code,
            f"{spec.step_id}: {text}",
            service=spec.service,
            handler=spec.name,
            event=event,
            severity=severity,
        )
    return Problem(code, text, service=service, event=event, severity=severity)


def _missing_compensations(ch: Choreography) -> Iterator[Problem]:
    for spec in ch.handlers:
        if spec.kind is StepKind.COMPENSATABLE and not ch.compensations_of(spec.step_id):
            yield _problem(
                ProblemCode.MISSING_COMPENSATION,
                spec,
                "compensatable step has no compensation (declare "
                f"@{spec.service}.compensation(undoes={spec.name}, ...), or make it a "
                "pivot or retriable step)",
            )


def _can_fail(ch: Choreography, saga: Saga) -> bool:
    return any(spec.fails_with for spec in ch.saga_handlers(saga.name))


def _uncompensated_starts(ch: Choreography) -> Iterator[Problem]:
    for saga in ch.sagas:
        if not _can_fail(ch, saga):
            continue
        starters = ch.starters(saga.name)
        if any(ch.compensations_of(s.start_step_id(saga)) for s in starters):
            continue
        who = starters[0].name if len(starters) == 1 else None
        hint = (
            f"declare @{who}.compensation(undoes=<the {saga.name} Saga>, ...)"
            if who
            else "declare a compensation with undoes=<the Saga> in the service that "
            "publishes its start event"
        )
        yield _problem(
            ProblemCode.START_NOT_COMPENSATED,
            None,
            f"saga {saga.name}: it can fail, but no compensation undoes its start ({hint})",
            event=event_type_of(saga.start),
            service=who,
            severity=Severity.WARNING,
        )


def _bad_undoes(ch: Choreography) -> Iterator[Problem]:
    for spec in ch.handlers:
        if spec.kind is not StepKind.COMPENSATION or spec.undoes is None:
            continue
        target = spec.undoes
        owner, _, name = target.partition(".")
        undone = ch.handler(target)
        if owner != spec.service:
            yield _problem(
                ProblemCode.UNDOES_OTHER_SERVICE,
                spec,
                f"compensation undoes {target}, a step of service {owner}; a service "
                f"compensates only its own steps (move it to @{owner}.compensation)",
            )
        elif ch.is_start_step(target):
            continue
        elif undone is None:
            elsewhere = [h.step_id for h in ch.handlers if h.name == name]
            hint = f" ({', '.join(elsewhere)} is in another service)" if elsewhere else ""
            yield _problem(
                ProblemCode.UNKNOWN_UNDONE_STEP,
                spec,
                f"compensation undoes {target}, which is not a step of {spec.service}{hint}",
            )
        elif undone.kind is not StepKind.COMPENSATABLE:
            yield _problem(
                ProblemCode.UNDOES_NOT_COMPENSATABLE,
                spec,
                f"compensation undoes {target}, a {undone.kind.value} handler, which cannot "
                "be compensated (only a @step can)",
            )
        else:
            own_failures = set(spec.consumed_types) & set(
                event_type_of(t) for t in undone.fails_with
            )
            for event_type in sorted(own_failures):
                yield _problem(
                    ProblemCode.COMPENSATES_FAILED_STEP,
                    spec,
                    f"compensation undoes {target} on {event_type}, the failure of that very "
                    f"step: {target} did not complete, so there is nothing to undo",
                    event=event_type,
                )


def _dead_ends(ch: Choreography) -> Iterator[Problem]:
    starts = ch.start_events
    for spec in ch.handlers:
        if spec.kind is StepKind.LISTENER:
            continue
        for cls in spec.emits:
            event_type = event_type_of(cls)
            if ch.consumers(event_type) or ch.is_terminal(event_type) or event_type in starts:
                continue
            if event_type in BUILTIN_EVENTS:  # choreo's own (timeouts): consuming is optional
                continue
            yield _problem(
                ProblemCode.DEAD_END_EVENT,
                spec,
                f"emits {event_type}, which no handler consumes, and it is neither a saga's "
                "completed/failed event nor a notice",
                event=event_type,
            )


def _never_emitted(ch: Choreography) -> Iterator[Problem]:
    starts = ch.start_events
    for spec in ch.handlers:
        for event_type in spec.consumed_types:
            if ch.producers(event_type) or event_type in starts or event_type in BUILTIN_EVENTS:
                continue
            yield _problem(
                ProblemCode.NEVER_EMITTED,
                spec,
                f"consumes {event_type}, which no handler emits and which is no saga's start event",
                event=event_type,
            )


def _failed_events(ch: Choreography, event_type: str) -> frozenset[str]:
    sagas = ch.sagas_of(event_type) or ch.sagas
    return frozenset(event_type_of(t) for saga in sagas for t in saga.failed)


def _ends_saga_failed(ch: Choreography, spec: HandlerSpec, failed: frozenset[str]) -> bool:
    return spec.kind is StepKind.COMPENSATION or any(t in failed for t in spec.emitted_types)


def _unhandled_failures(ch: Choreography) -> Iterator[Problem]:
    for spec in ch.handlers:
        for cls in spec.fails_with:
            event_type = event_type_of(cls)
            failed = _failed_events(ch, event_type)
            handlers = [c for c in ch.consumers(event_type) if _ends_saga_failed(ch, c, failed)]
            if not handlers:
                yield _problem(
                    ProblemCode.UNHANDLED_FAILURE,
                    spec,
                    f"failure event {event_type} is consumed by no compensation: the saga "
                    f"would hang (declare a compensation with on={cls.__name__})",
                    event=event_type,
                )
            elif not ch.reaches([event_type], failed, lambda h: h.kind is not StepKind.LISTENER):
                names = ", ".join(sorted(failed)) or "none declared"
                yield _problem(
                    ProblemCode.NO_FAILED_PATH,
                    spec,
                    f"after failure event {event_type} no chain of compensations reaches a "
                    f"failed event of the saga ({names}): the saga would never end",
                    event=event_type,
                )


def _saga_paths(ch: Choreography) -> Iterator[Problem]:
    for saga in ch.sagas:
        start = event_type_of(saga.start)
        steps = [c for c in ch.consumers(start) if c.kind is not StepKind.LISTENER]
        if not steps:
            yield _problem(
                ProblemCode.START_NOT_CONSUMED,
                None,
                f"saga {saga.name}: its start event {start} is consumed by no step",
                event=start,
            )
            continue
        completed = frozenset(event_type_of(t) for t in saga.completed)
        forward = ch.happy_path(saga.name)
        if not any(t in completed for spec in forward for t in spec.success_types):
            yield _problem(
                ProblemCode.NO_COMPLETION_PATH,
                None,
                f"saga {saga.name}: no chain of forward steps leads from {start} to a "
                f"completed event ({', '.join(sorted(completed))})",
                event=start,
            )


def _pivots(ch: Choreography) -> Iterator[Problem]:
    """A saga has at most one pivot, compensatable steps before it, retriable ones after."""
    for saga in ch.sagas:
        path = ch.happy_path(saga.name)
        pivots = [spec for spec in path if spec.kind is StepKind.PIVOT]
        for extra in pivots[1:]:
            yield _problem(
                ProblemCode.MULTIPLE_PIVOTS,
                extra,
                f"saga {saga.name} has more than one pivot "
                f"({', '.join(p.step_id for p in pivots)}); a saga has one point of no return",
            )
        if pivots:
            yield from _retriable_before_pivot(ch, saga, path, pivots)
            yield from _compensatable_after_pivot(ch, saga, pivots[0])


def _retriable_before_pivot(
    ch: Choreography, saga: Saga, path: Iterable[HandlerSpec], pivots: list[HandlerSpec]
) -> Iterator[Problem]:
    pivot_ids = {p.step_id for p in pivots}
    for spec in path:
        if spec.kind is not StepKind.RETRIABLE:
            continue
        later = [s for s in ch.steps_after(spec, saga.name) if s.step_id in pivot_ids]
        if later:
            yield _problem(
                ProblemCode.RETRIABLE_BEFORE_PIVOT,
                spec,
                f"retriable step comes before the pivot {later[0].step_id} of saga "
                f"{saga.name}; steps before the pivot must be compensatable",
            )


def _compensatable_after_pivot(
    ch: Choreography, saga: Saga, pivot: HandlerSpec
) -> Iterator[Problem]:
    reported: set[str] = set()
    for spec in ch.steps_after(pivot, saga.name):
        if spec.kind is StepKind.COMPENSATABLE and spec.step_id not in reported:
            reported.add(spec.step_id)
            yield _problem(
                ProblemCode.STEP_AFTER_PIVOT,
                spec,
                f"compensatable step comes after the pivot {pivot.step_id} of saga "
                f"{saga.name}, which cannot be undone; steps after the pivot must be "
                f"retriable (@{spec.service}.retriable)",
            )


def _unjoined_sagas(ch: Choreography) -> Iterator[Problem]:
    for spec in ch.handlers:
        service = ch.service(spec.service)
        joined = {s.name for s in service.sagas} if service is not None else set()
        for event_type in spec.emitted_types:
            joined_roles = {
                s.terminal_role(event_type) for s in ch.sagas if s.name in joined
            }  # an event two sagas end with: joining one of them is enough
            for saga in ch.sagas:
                role = saga.terminal_role(event_type)
                if role in joined_roles:
                    continue
                if role in (Role.COMPLETED, Role.FAILED) and saga.name not in joined:
                    yield _problem(
                        ProblemCode.SAGA_NOT_JOINED,
                        spec,
                        f"emits {event_type}, the {role.value} event of saga {saga.name}, but "
                        f"service {spec.service} does not join that saga (declare "
                        f"Service({spec.service!r}, sagas=[...]))",
                        event=event_type,
                    )


def _missing_schemas(ch: Choreography, has_schema: Callable[[str], bool]) -> Iterator[Problem]:
    for event_type in ch.event_types:
        if event_type.startswith(BUILTIN_NAMESPACE) or has_schema(event_type):
            continue
        users = [*ch.producers(event_type), *ch.consumers(event_type)]
        first = users[0] if users else None
        who = ", ".join(dict.fromkeys(u.step_id for u in users)) or "a saga declaration"
        text = f"event {event_type} has no schema (used by {who})"
        yield _problem(ProblemCode.MISSING_SCHEMA, first, text, event=event_type)


def _compensation_chains(ch: Choreography) -> Iterator[Problem]:
    """A failure's compensations undo every completed step, the last completed first."""
    codes = {"incomplete": ProblemCode.CHAIN_INCOMPLETE, "order": ProblemCode.CHAIN_ORDER}
    for chain in compensation_chains(ch):
        spec = chain.failing
        for kind, text in chain.findings(ch.is_start_step):
            yield Problem(
                codes[kind],
                f"{spec.step_id}: {text}; the chain it triggers is {chain.describe()}",
                service=spec.service,
                handler=spec.name,
                event=chain.failure,
                chain=chain.describe(),
            )


def _declared_elsewhere(ch: Choreography) -> Iterator[Problem]:
    """Yield the problems services check themselves (an orchestrator checks its saga)."""
    for service in ch.services:
        own = getattr(service, "choreography_problems", None)
        if callable(own):
            yield from own(ch)


_RULES: tuple[Callable[[Choreography], Iterable[Problem]], ...] = (
    _missing_compensations,
    _uncompensated_starts,
    _bad_undoes,
    _dead_ends,
    _never_emitted,
    _unhandled_failures,
    _saga_paths,
    _pivots,
    _unjoined_sagas,
    _compensation_chains,
    _declared_elsewhere,
)
