"""The choreography graph: every service's declarations joined into one directed graph.

:meth:`Choreography.from_services` builds the graph; :func:`check` reports what is
inconsistent in it. Nodes are event types (``Node(EVENT, "shop.orders.OrderCreated")``),
handlers (``Node(HANDLER, "inventory.reserve")``) and saga starts
(``Node(START, "order.start")`` for a service that
:meth:`~choreo.choreography.service.Service.starts` a saga). Edges are:

- ``consumes``: event -> handler; ``emits`` / ``fails_with``: handler -> event;
- ``starts``: saga start -> the saga's start event;
- ``undoes``: compensation -> the step (or saga start) it undoes.

Each edge lies in one *lane*: ``forward`` (the happy path), ``failure`` (a forward step's
``fails_with``), ``compensation`` (into, out of, or from a compensation) and ``notice``
(listeners). An event's role comes from its saga's declaration (start / completed / failed)
and otherwise from the kind of handler that emits it (see
:meth:`~choreo.choreography.service.HandlerSpec.role_of`); a saga's events are those
reachable from its start event without entering another saga's start.

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
                            does not join that saga, so the runtime cannot mark it terminal
=========================== ================================================================
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from choreo.avro.lookup import has_schema_predicate
from choreo.choreography.service import HandlerSpec, Saga, Service, StepKind
from choreo.errors import ChoreographyError
from choreo.model.envelope import Role
from choreo.model.events import Event, event_type_of

__all__ = [
    "BUILTIN_EVENTS",
    "SAGA_TIMED_OUT",
    "Choreography",
    "Edge",
    "EdgeKind",
    "Lane",
    "Node",
    "NodeKind",
    "Problem",
    "ProblemCode",
    "Severity",
    "check",
    "validate",
]

logger = logging.getLogger(__name__)

SAGA_TIMED_OUT: Final = "choreo.SagaTimedOut"
"""The event type the tracker emits when a saga is stuck; compensations may consume it."""

BUILTIN_EVENTS: Final = frozenset({SAGA_TIMED_OUT})
"""Event types choreo itself emits: consuming them needs no producer among the services."""

_BUILTIN_NAMESPACE = "choreo."


class NodeKind(enum.StrEnum):
    """What a graph node stands for."""

    EVENT = "event"
    HANDLER = "handler"
    START = "start"


@dataclass(frozen=True, slots=True, order=True)
class Node:
    """One node: an event type, a handler (``service.handler``) or a saga start."""

    kind: NodeKind
    name: str


class EdgeKind(enum.StrEnum):
    """What an edge says."""

    CONSUMES = "consumes"
    EMITS = "emits"
    FAILS_WITH = "fails_with"
    STARTS = "starts"
    UNDOES = "undoes"


class Lane(enum.StrEnum):
    """Which part of the choreography an edge belongs to."""

    FORWARD = "forward"
    FAILURE = "failure"
    COMPENSATION = "compensation"
    NOTICE = "notice"


@dataclass(frozen=True, slots=True)
class Edge:
    """One directed edge of the graph and the lane it lies in."""

    source: Node
    target: Node
    kind: EdgeKind
    lane: Lane


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


@dataclass(frozen=True, slots=True)
class Problem:
    """One inconsistency found by :func:`check`; ``message`` starts with ``service.handler``.

    ``service``, ``handler`` and ``event`` say where it is, when that is known (a
    saga-level problem has no handler).
    """

    code: ProblemCode
    message: str
    service: str | None = None
    handler: str | None = None
    event: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.severity.value} {self.code.value}: {self.message}"


_FORWARD_KINDS = frozenset({StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE})
_IMPLIED_ROLE_ORDER = (Role.FAILURE, Role.COMPENSATION, Role.STEP, Role.NOTICE)


def _successes(spec: HandlerSpec) -> tuple[str, ...]:
    return tuple(event_type_of(t) for t in spec.emits)


def _handler_node(spec: HandlerSpec) -> Node:
    return Node(NodeKind.HANDLER, spec.step_id)


def _event_node(event_type: str) -> Node:
    return Node(NodeKind.EVENT, event_type)


def _lane_of(spec: HandlerSpec, kind: EdgeKind) -> Lane:
    if spec.kind is StepKind.COMPENSATION:
        return Lane.COMPENSATION
    if spec.kind is StepKind.LISTENER:
        return Lane.NOTICE
    if kind is EdgeKind.FAILS_WITH:
        return Lane.FAILURE
    return Lane.FORWARD


class Choreography:
    """The whole choreography of a set of services: one directed graph, read-only.

    Build it with :meth:`from_services`. It is a snapshot: handlers registered afterwards
    are not in it. Queries return handlers
    (:class:`~choreo.choreography.service.HandlerSpec`) and event types (Avro full
    names) in a stable order: the order the services and their handlers were declared in.
    """

    def __init__(self, services: Sequence[Service], sagas: Sequence[Saga]) -> None:
        self.services: tuple[Service, ...] = tuple(services)
        self.sagas: tuple[Saga, ...] = tuple(sagas)
        self.handlers: tuple[HandlerSpec, ...] = tuple(
            spec for service in self.services for spec in service.handlers
        )
        self._by_step = {spec.step_id: spec for spec in self.handlers}
        self._service_by_name = {service.name: service for service in self.services}
        self._saga_by_name = {saga.name: saga for saga in self.sagas}
        self._classes: dict[str, type[Event]] = {}
        self._producers: dict[str, list[HandlerSpec]] = {}
        self._consumers: dict[str, list[HandlerSpec]] = {}
        self._starters: dict[str, list[Service]] = {}
        edges: list[Edge] = []
        for saga in self.sagas:
            for cls in (saga.start, *saga.completed, *saga.failed):
                self._classes.setdefault(event_type_of(cls), cls)
        for service in self.services:
            for saga in service.started_sagas:
                self._starters.setdefault(saga.name, []).append(service)
                start = Node(NodeKind.START, service.start_step_id(saga))
                target = _event_node(event_type_of(saga.start))
                edges.append(Edge(start, target, EdgeKind.STARTS, Lane.FORWARD))
        for spec in self.handlers:
            edges.extend(self._handler_edges(spec))
        self.edges: tuple[Edge, ...] = tuple(edges)
        self._saga_events = {saga.name: self._reach(saga) for saga in self.sagas}

    def _handler_edges(self, spec: HandlerSpec) -> Iterator[Edge]:
        """Yield ``spec``'s edges, recording its events, producers and consumers."""
        node = _handler_node(spec)
        for cls in spec.consumes:
            event_type = event_type_of(cls)
            self._classes.setdefault(event_type, cls)
            self._consumers.setdefault(event_type, []).append(spec)
            lane = _lane_of(spec, EdgeKind.CONSUMES)
            yield Edge(_event_node(event_type), node, EdgeKind.CONSUMES, lane)
        for kind, classes in ((EdgeKind.EMITS, spec.emits), (EdgeKind.FAILS_WITH, spec.fails_with)):
            for cls in classes:
                event_type = event_type_of(cls)
                self._classes.setdefault(event_type, cls)
                self._producers.setdefault(event_type, []).append(spec)
                yield Edge(node, _event_node(event_type), kind, _lane_of(spec, kind))
        if spec.kind is StepKind.COMPENSATION and spec.undoes is not None:
            undone = self._by_step.get(spec.undoes)
            if undone is not None:
                yield Edge(node, _handler_node(undone), EdgeKind.UNDOES, Lane.COMPENSATION)
            elif self.is_start_step(spec.undoes):
                start = Node(NodeKind.START, spec.undoes)
                yield Edge(node, start, EdgeKind.UNDOES, Lane.COMPENSATION)

    @classmethod
    def from_services(
        cls, services: Iterable[Service], sagas: Iterable[Saga] | None = None
    ) -> Choreography:
        """Return the choreography of ``services`` and of ``sagas`` (plus those they join).

        Raises :class:`~choreo.errors.ChoreographyError` when two services share a name or
        two different sagas share a name; everything else is left to :func:`check`.
        """
        service_list = list(services)
        names: dict[str, Service] = {}
        for service in service_list:
            if not isinstance(service, Service):
                raise ChoreographyError(f"{service!r} is not a Service")
            if service.name in names and names[service.name] is not service:
                raise ChoreographyError(f"two services are named {service.name}")
            names[service.name] = service
        unique_services = list(names.values())
        saga_by_name: dict[str, Saga] = {}
        for saga in [*(sagas or ()), *(s for svc in unique_services for s in svc.sagas)]:
            if not isinstance(saga, Saga):
                raise ChoreographyError(f"{saga!r} is not a Saga")
            known = saga_by_name.get(saga.name)
            if known is not None and known != saga:
                raise ChoreographyError(f"two different sagas are named {saga.name}")
            saga_by_name[saga.name] = saga
        logger.debug(
            "choreography of %d services and %d sagas", len(unique_services), len(saga_by_name)
        )
        return cls(unique_services, list(saga_by_name.values()))

    def __repr__(self) -> str:
        return (
            f"Choreography(services={[s.name for s in self.services]}, "
            f"sagas={[s.name for s in self.sagas]}, handlers={len(self.handlers)})"
        )

    # --- nodes and edges -------------------------------------------------------------

    @property
    def event_types(self) -> tuple[str, ...]:
        """Return every event type in the graph, in order of first appearance."""
        return tuple(self._classes)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Return every node: start nodes, handlers, then events."""
        starts = {e.source for e in self.edges if e.kind is EdgeKind.STARTS}
        return (
            *sorted(starts),
            *(_handler_node(spec) for spec in self.handlers),
            *(_event_node(t) for t in self.event_types),
        )

    def event_class(self, event_type: str) -> type[Event] | None:
        """Return the class declared for ``event_type``, or None if it is not in the graph."""
        return self._classes.get(event_type)

    def edges_in(self, *lanes: Lane) -> tuple[Edge, ...]:
        """Return the edges lying in any of ``lanes``, in declaration order."""
        return tuple(edge for edge in self.edges if edge.lane in lanes)

    def forward_edges(self) -> tuple[Edge, ...]:
        """Return the edges of forward steps: the happy path and the failures they emit."""
        return self.edges_in(Lane.FORWARD, Lane.FAILURE)

    def compensation_edges(self) -> tuple[Edge, ...]:
        """Return the edges into and out of compensations, and their ``undoes`` links."""
        return self.edges_in(Lane.COMPENSATION)

    # --- handlers and services -------------------------------------------------------

    def handler(self, step_id: str) -> HandlerSpec | None:
        """Return the handler whose step id (``service.handler``) is ``step_id``, or None."""
        return self._by_step.get(step_id)

    def service(self, name: str) -> Service | None:
        """Return the service named ``name``, or None."""
        return self._service_by_name.get(name)

    def saga(self, name: str) -> Saga | None:
        """Return the saga named ``name``, or None."""
        return self._saga_by_name.get(name)

    def producers(self, event_type: str) -> tuple[HandlerSpec, ...]:
        """Return the handlers that may emit ``event_type`` (as success or failure)."""
        return tuple(self._producers.get(event_type, ()))

    def consumers(self, event_type: str) -> tuple[HandlerSpec, ...]:
        """Return the handlers that react to ``event_type``."""
        return tuple(self._consumers.get(event_type, ()))

    def starters(self, saga_name: str) -> tuple[Service, ...]:
        """Return the services that declare they open saga ``saga_name``."""
        return tuple(self._starters.get(saga_name, ()))

    def is_start_step(self, step_id: str) -> bool:
        """Return True if ``step_id`` is ``service.start`` of a service that opens a saga."""
        service = self._service_by_name.get(step_id.partition(".")[0])
        return service is not None and any(
            service.start_step_id(saga) == step_id for saga in service.started_sagas
        )

    def compensations_of(self, step_id: str) -> tuple[HandlerSpec, ...]:
        """Return the compensations whose ``undoes`` names ``step_id``."""
        return tuple(
            spec
            for spec in self.handlers
            if spec.kind is StepKind.COMPENSATION and spec.undoes == step_id
        )

    # --- sagas and roles ---------------------------------------------------------------

    @property
    def start_events(self) -> frozenset[str]:
        """Return the start event types of every saga."""
        return frozenset(event_type_of(saga.start) for saga in self.sagas)

    def _reach(self, saga: Saga) -> frozenset[str]:
        """Return saga ``saga``'s event types: its declared events and those reachable from
        them through any handler, without going past another saga's start event.

        ``choreo.SagaTimedOut`` belongs to the saga when a compensation reacting to it
        undoes one of the saga's steps (or its start).
        """
        start = event_type_of(saga.start)
        other_starts = self.start_events - {start}
        seeds = [start, *(event_type_of(t) for t in (*saga.completed, *saga.failed))]
        seen = self._expand(seeds, other_starts)
        steps = {spec.step_id for spec in self.handlers if set(spec.consumed_types) & seen}
        steps.update(s.start_step_id(saga) for s in self.starters(saga.name))
        if SAGA_TIMED_OUT not in seen and any(
            c.kind is StepKind.COMPENSATION and c.undoes in steps
            for c in self.consumers(SAGA_TIMED_OUT)
        ):
            seen = self._expand([*seeds, SAGA_TIMED_OUT], other_starts)
        return frozenset(seen)

    def _expand(self, seeds: Iterable[str], barrier: frozenset[str]) -> set[str]:
        """Return ``seeds`` and every event type emitted downstream of them; an event in
        ``barrier`` is included but not followed."""
        seen = set(seeds)
        queue = deque(t for t in seen if t not in barrier)
        while queue:
            event_type = queue.popleft()
            for spec in self.consumers(event_type):
                for emitted in spec.emitted_types:
                    if emitted not in seen:
                        seen.add(emitted)
                        if emitted not in barrier:
                            queue.append(emitted)
        return seen

    def saga_events(self, saga_name: str) -> frozenset[str]:
        """Return the event types of saga ``saga_name``: those reachable from its start."""
        return self._saga_events.get(saga_name, frozenset())

    def sagas_of(self, event_type: str) -> tuple[Saga, ...]:
        """Return the sagas ``event_type`` takes part in."""
        return tuple(s for s in self.sagas if event_type in self._saga_events[s.name])

    def saga_handlers(self, saga_name: str) -> tuple[HandlerSpec, ...]:
        """Return the handlers that react to an event of saga ``saga_name``."""
        events = self.saga_events(saga_name)
        return tuple(
            spec for spec in self.handlers if any(t in events for t in spec.consumed_types)
        )

    def role_in(self, event_type: str, saga_name: str | None = None) -> Role | None:
        """Return the role of ``event_type`` (in saga ``saga_name`` if given), or None.

        A saga's declaration (start, completed, failed) wins; otherwise the kind of the
        handlers that emit it decides (failure before compensation before step before
        notice when they disagree); ``choreo.SagaTimedOut`` is a failure.
        """
        sagas = (
            self.sagas if saga_name is None else tuple(s for s in self.sagas if s.name == saga_name)
        )
        for saga in sagas:
            declared = saga.terminal_role(event_type)
            if declared is not None:
                return declared
        if event_type == SAGA_TIMED_OUT:
            return Role.FAILURE
        implied = {spec.role_of(event_type) for spec in self.producers(event_type)}
        return next((role for role in _IMPLIED_ROLE_ORDER if role in implied), None)

    def roles(self, saga_name: str | None = None) -> dict[str, Role]:
        """Return event type -> role for every event (of saga ``saga_name`` if given).

        Events whose role cannot be known (consumed but never emitted, and declared by
        no saga) are left out.
        """
        event_types: Iterable[str] = (
            self.event_types
            if saga_name is None
            else [t for t in self.event_types if t in self.saga_events(saga_name)]
        )
        result: dict[str, Role] = {}
        for event_type in event_types:
            role = self.role_in(event_type, saga_name)
            if role is not None:
                result[event_type] = role
        return result

    def is_terminal(self, event_type: str) -> bool:
        """Return True if some saga declares ``event_type`` completed or failed."""
        return any(
            saga.terminal_role(event_type) in (Role.COMPLETED, Role.FAILED) for saga in self.sagas
        )

    def happy_path(self, saga_name: str) -> tuple[HandlerSpec, ...]:
        """Return saga ``saga_name``'s forward steps in order along its happy path.

        The walk starts at the saga's start event and follows forward steps and the events
        they emit on success (not their failures), breadth first, up to completed events.
        """
        saga = self._saga_by_name.get(saga_name)
        if saga is None:
            return ()
        return tuple(self._forward_walk([event_type_of(saga.start)], saga))

    def _forward_walk(self, events: Iterable[str], saga: Saga) -> Iterator[HandlerSpec]:
        stop = {event_type_of(t) for t in saga.completed} | (
            self.start_events - {event_type_of(saga.start)}
        )
        seen_events = set(events)
        seen_steps: set[str] = set()
        queue = deque(seen_events)
        while queue:
            event_type = queue.popleft()
            for spec in self.consumers(event_type):
                if spec.kind not in _FORWARD_KINDS or spec.step_id in seen_steps:
                    continue
                seen_steps.add(spec.step_id)
                yield spec
                for cls in spec.emits:
                    emitted = event_type_of(cls)
                    if emitted not in seen_events and emitted not in stop:
                        seen_events.add(emitted)
                        queue.append(emitted)

    def steps_after(self, spec: HandlerSpec, saga_name: str) -> tuple[HandlerSpec, ...]:
        """Return the forward steps reachable from ``spec``'s successes in saga ``saga_name``."""
        saga = self._saga_by_name.get(saga_name)
        if saga is None:
            return ()
        return tuple(self._forward_walk(_successes(spec), saga))

    def reaches(
        self, sources: Iterable[str], targets: frozenset[str], follow: Callable[[HandlerSpec], bool]
    ) -> bool:
        """Return True if a chain of handlers accepted by ``follow`` leads from ``sources``
        to any of ``targets`` (event types)."""
        seen = set(sources)
        if seen & targets:
            return True
        queue = deque(seen)
        while queue:
            event_type = queue.popleft()
            for spec in self.consumers(event_type):
                if not follow(spec):
                    continue
                for emitted in spec.emitted_types:
                    if emitted in targets:
                        return True
                    if emitted not in seen:
                        seen.add(emitted)
                        queue.append(emitted)
        return False


# --- checks ------------------------------------------------------------------------------


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
        if not any(t in completed for spec in forward for t in _successes(spec)):
            yield _problem(
                ProblemCode.NO_COMPLETION_PATH,
                None,
                f"saga {saga.name}: no chain of forward steps leads from {start} to a "
                f"completed event ({', '.join(sorted(completed))})",
                event=start,
            )


def _pivots(ch: Choreography) -> Iterator[Problem]:
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
        if not pivots:
            continue
        pivot_ids = {p.step_id for p in pivots}
        for spec in path:
            if spec.kind is StepKind.RETRIABLE:
                later = [s for s in ch.steps_after(spec, saga.name) if s.step_id in pivot_ids]
                if later:
                    yield _problem(
                        ProblemCode.RETRIABLE_BEFORE_PIVOT,
                        spec,
                        f"retriable step comes before the pivot {later[0].step_id} of saga "
                        f"{saga.name}; steps before the pivot must be compensatable",
                    )
        reported: set[str] = set()
        for pivot in pivots[:1]:
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
            for saga in ch.sagas:
                role = saga.terminal_role(event_type)
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
        if event_type.startswith(_BUILTIN_NAMESPACE) or has_schema(event_type):
            continue
        users = [*ch.producers(event_type), *ch.consumers(event_type)]
        first = users[0] if users else None
        who = ", ".join(dict.fromkeys(u.step_id for u in users)) or "a saga declaration"
        text = f"event {event_type} has no schema (used by {who})"
        yield _problem(ProblemCode.MISSING_SCHEMA, first, text, event=event_type)


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
)
