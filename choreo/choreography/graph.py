"""The choreography graph: every service's declarations joined into one directed graph.

:meth:`Choreography.from_services` builds the graph. Nodes are event types
(``Node(EVENT, "shop.orders.OrderCreated")``), handlers (``Node(HANDLER,
"inventory.reserve")``) and saga starts (``Node(START, "order.start")`` for a service that
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

:mod:`choreo.choreography.checks` reports what is inconsistent in a choreography.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

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
]

logger = logging.getLogger(__name__)

SAGA_TIMED_OUT: Final = "choreo.SagaTimedOut"
"""The event type the tracker emits when a saga is stuck; compensations may consume it."""

BUILTIN_EVENTS: Final = frozenset(
    {SAGA_TIMED_OUT, "choreo.DeadlinePassed", "choreo.SagaCompensationFailed"}
)
"""Event types choreo itself emits: consuming them needs no producer among the services."""

BUILTIN_NAMESPACE: Final = "choreo."
"""The Avro namespace of choreo's own events (their schemas ship with choreo)."""


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


_FORWARD_KINDS = frozenset(
    {StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE, StepKind.ORCHESTRATION}
)
_IMPLIED_ROLE_ORDER = (
    Role.FAILURE,
    Role.COMPENSATION,
    Role.COMPENSATE,
    Role.COMMAND,
    Role.STEP,
    Role.FAILED,
    Role.COMPLETED,
    Role.NOTICE,
)


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
        two different sagas share a name; everything else is left to
        :func:`~choreo.choreography.checks.check`.
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
        if event_type == "choreo.DeadlinePassed":  # an orchestrator's deadline notice
            return Role.NOTICE
        implied = {
            self._service_by_name[spec.service].role_of(spec, event_type, saga_name)
            for spec in self.producers(event_type)
        }
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
        return tuple(self._forward_walk(spec.success_types, saga))

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
