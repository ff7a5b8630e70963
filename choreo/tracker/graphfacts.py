"""What the tracker learns from a choreography's declarations, when it has them.

The fold works from the role headers alone; a choreography adds what headers cannot
say: which steps are compensatable (so a failed saga's missing compensations are
violations), how long each step may take (per-step ``deadline``, else the saga's), which
event types may follow an event, and which steps react to it. :func:`facts_from` reads
these from a :class:`choreo.choreography.graph.Choreography` or from plain
:class:`~choreo.choreography.service.Service` objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from choreo.choreography.graph import Choreography
from choreo.choreography.service import HandlerSpec, Saga, Service, StepKind

__all__ = ["GraphFacts", "facts_from"]


@dataclass(frozen=True, slots=True)
class GraphFacts:
    """The declared facts the fold and the timeout service use (all keyed by plain strings).

    ``deadline_after_ms`` maps an event type to the milliseconds within which the next
    event is due after it (the smallest ``deadline`` of the steps reacting to it);
    ``saga_deadline_ms`` maps a saga name to its default deadline.
    """

    compensatable: frozenset[str] = frozenset()
    forward_steps: frozenset[str] = frozenset()
    deadline_after_ms: Mapping[str, int] = field(default_factory=dict)
    saga_deadline_ms: Mapping[str, int] = field(default_factory=dict)
    next_types: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reacting_steps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    orchestrated: frozenset[str] = frozenset()
    """Names of the sagas an orchestrator runs: it times their steps out itself."""

    def expected_after(self, event_type: str) -> tuple[str, ...]:
        """Return the event types the steps reacting to ``event_type`` may emit."""
        return tuple(self.next_types.get(event_type, ()))

    def deadline_ms(self, event_type: str, saga: str, default_ms: int) -> int:
        """Return how long a saga may wait after an ``event_type`` event before it is stuck."""
        declared = self.deadline_after_ms.get(event_type)
        if declared is not None:
            return declared
        return self.saga_deadline_ms.get(saga, default_ms)


def facts_from(choreography: Choreography | Iterable[Service]) -> GraphFacts:
    """Return the facts declared by ``choreography`` (a Choreography, or some Services)."""
    if isinstance(choreography, Choreography):
        services: list[Service] = list(choreography.services)
        sagas: list[Saga] = list(choreography.sagas)
    else:
        services = list(choreography)
        sagas = []
    sagas.extend(saga for service in services for saga in service.sagas)
    saga_deadline: dict[str, int] = {}
    for saga in sagas:
        if saga.deadline is not None:
            saga_deadline.setdefault(saga.name, int(saga.deadline * 1000))
    orchestrated = {
        service.orchestrator.saga.name
        for service in services
        if hasattr(service, "orchestrator")  # an orchestrator's service
    }
    steps = _StepFacts()
    for service in services:
        for spec in service.handlers:
            steps.add(spec)
    return GraphFacts(
        compensatable=frozenset(steps.compensatable),
        forward_steps=frozenset(steps.forward),
        deadline_after_ms=steps.deadline_after,
        saga_deadline_ms=saga_deadline,
        next_types={k: tuple(dict.fromkeys(v)) for k, v in steps.next_types.items()},
        reacting_steps={k: tuple(v) for k, v in steps.reacting.items()},
        orchestrated=frozenset(orchestrated),
    )


class _StepFacts:
    """The per-handler facts, collected one handler at a time (see :func:`facts_from`)."""

    def __init__(self) -> None:
        self.compensatable: set[str] = set()
        self.forward: set[str] = set()
        self.deadline_after: dict[str, int] = {}
        self.next_types: dict[str, list[str]] = {}
        self.reacting: dict[str, list[str]] = {}

    def add(self, spec: HandlerSpec) -> None:
        """Record what one handler declares: its kind, what it reacts to and its deadline."""
        if spec.kind is StepKind.COMPENSATABLE:
            self.compensatable.add(spec.step_id)
        if spec.kind is StepKind.COMPENSATION and spec.undoes is not None:
            self.compensatable.add(spec.undoes)
        if spec.kind.is_forward:
            self.forward.add(spec.step_id)
        if spec.kind is StepKind.LISTENER:
            return
        for consumed in spec.consumed_types:
            self.reacting.setdefault(consumed, []).append(spec.step_id)
            self.next_types.setdefault(consumed, []).extend(spec.emitted_types)
            if spec.deadline is not None:
                ms = int(spec.deadline * 1000)
                self.deadline_after[consumed] = min(ms, self.deadline_after.get(consumed, ms))
