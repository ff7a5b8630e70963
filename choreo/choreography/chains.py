"""The compensation chain of each failure event, derived from the declarations alone.

When a forward step fails with a failure event, the steps that completed before it must be
undone in reverse order: the last step completed is undone first, the saga's start (when a
compensation undoes it) last. In a choreography nobody orders the undoing but the events:
each compensation reacts to an event and emits one that the next compensation reacts to.
:func:`compensation_chains` follows those events from every failure event and returns, per
failure, the :class:`CompensationChain` it triggers, which says which completed steps the
chain misses and which it undoes out of order (:func:`choreo.choreography.checks.check`
reports both, with the chain, as ``compensation-chain-incomplete`` and
``compensation-chain-order``).

The chain is a breadth-first walk: the compensations that consume the failure event are
at *level* 1, those consuming an event a level-1 compensation emits at level 2, and so
on (a compensation is placed at the first level that reaches it). Compensations at one
level may run in any order, so a step must be undone at a strictly lower level than every
step that completed before it. Completion order is the saga's forward order: a step is
before another when the other is reachable from its successes
(:meth:`~choreo.choreography.graph.Choreography.steps_after`); two steps on parallel
branches may be undone in either order.

Not derived: a failure after the saga's pivot (nothing before the pivot can be undone;
``step-after-pivot`` and ``retriable-before-pivot`` cover that), a failure an orchestrator
handles (the orchestrator commands its compensations in reverse order itself, see
:mod:`choreo.orchestration.check`), and a failure no compensation consumes
(``unhandled-failure``); a failure that only a forward step consumes (one that ends the
saga itself) has an empty chain, which misses every completed step. A compensatable step
with no compensation at all is left out of the steps a chain must undo
(``missing-compensation`` reports it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from choreo.choreography.graph import Choreography
from choreo.choreography.service import HandlerSpec, Saga, StepKind
from choreo.model.events import event_type_of

__all__ = ["ChainLink", "CompensationChain", "compensation_chains"]

MAX_LEVELS = 64
"""The longest chain followed; a longer one (a cycle of compensations) is cut there."""


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One compensation of a chain: the event it reacts to, and its level (1 = first)."""

    level: int
    trigger: str
    handler: HandlerSpec

    def describe(self) -> str:
        """Return ``service.handler (undoes x)`` for the chain's text."""
        undoes = self.handler.undoes
        return f"{self.handler.step_id} (undoes {undoes})" if undoes else self.handler.step_id


@dataclass(frozen=True, slots=True)
class CompensationChain:
    """What one failure event triggers, and what it should undo.

    ``completed`` lists the step ids done when ``failing`` fails, in forward order (the
    saga's start first when a compensation undoes it); ``links`` the compensations the
    failure triggers, level by level; ``before`` the pairs ``(a, b)`` of ``completed``
    where ``a`` completes before ``b`` (so ``b`` must be undone first).
    """

    saga: str
    failure: str
    failing: HandlerSpec
    completed: tuple[str, ...]
    links: tuple[ChainLink, ...]
    before: tuple[tuple[str, str], ...]

    def level_of(self, step_id: str) -> int | None:
        """Return the first level at which the chain undoes ``step_id``, or None."""
        levels = [link.level for link in self.links if link.handler.undoes == step_id]
        return min(levels) if levels else None

    @property
    def missed(self) -> tuple[str, ...]:
        """Return the completed steps no compensation of the chain undoes."""
        return tuple(step for step in self.completed if self.level_of(step) is None)

    @property
    def out_of_order(self) -> tuple[tuple[str, str], ...]:
        """Return ``(a, b)`` pairs where ``a`` completed before ``b`` but is not undone after it."""
        wrong = []
        for first, second in self.before:
            first_level, second_level = self.level_of(first), self.level_of(second)
            if first_level is not None and second_level is not None and (
                first_level <= second_level
            ):
                wrong.append((first, second))
        return tuple(wrong)

    @property
    def expected(self) -> tuple[str, ...]:
        """Return the completed steps in the order they must be undone (last completed first)."""
        return tuple(reversed(self.completed))

    def findings(self, is_start: Callable[[str], bool]) -> list[tuple[str, str]]:
        """Return what is wrong with the chain: ``("incomplete" | "order", explanation)``.

        ``is_start`` says which step ids are a saga's start (named as such in the text).
        """
        starts = frozenset(step for step in self.completed if is_start(step))
        expected = " then ".join(_names(self.expected, starts))
        found: list[tuple[str, str]] = []
        if self.missed:
            found.append((
                "incomplete",
                f"on failure event {self.failure} of saga {self.saga} no compensation undoes"
                f" {', '.join(_names(self.missed, starts))}, completed before"
                f" {self.failing.step_id} failed (expected to undo {expected}); make a"
                " compensation of the chain react to the event before it",
            ))
        if self.out_of_order:
            pairs = "; ".join(
                f"{_names([first], starts)[0]} is undone at step {self.level_of(first)} of the"
                f" chain, not after {second} (step {self.level_of(second)})"
                for first, second in self.out_of_order
            )
            found.append((
                "order",
                f"on failure event {self.failure} of saga {self.saga} the completed steps are"
                f" not undone in reverse order (expected {expected}): {pairs}; make each"
                " compensation react to the event of the one that must come before it",
            ))
        return found

    def describe(self) -> str:
        """Return the chain as text: ``F -> a.undo (undoes a.step) -> E -> ...``.

        Compensations at one level are joined with `` | `` (they run in any order).
        """
        if not self.links:
            return f"{self.failure} -> (no compensation reacts to it)"
        parts = [self.failure]
        level = 0
        for link in self.links:
            if link.level != level:
                level = link.level
                parts.append(" | ".join(x.describe() for x in self.links if x.level == level))
                emitted = sorted(
                    {t for x in self.links if x.level == level for t in x.handler.emitted_types}
                )
                if emitted:
                    parts.append(" | ".join(emitted))
        return " -> ".join(parts)


def _names(steps: Iterable[str], starts: frozenset[str]) -> list[str]:
    """Return step ids as text, a saga's start named as such."""
    return [f"the saga's start ({step})" if step in starts else step for step in steps]


def compensation_chains(ch: Choreography) -> list[CompensationChain]:
    """Return the compensation chain of every failure event of every saga (see the module)."""
    chains: list[CompensationChain] = []
    for saga in ch.sagas:
        path = ch.happy_path(saga.name)
        pivots = [spec for spec in path if spec.kind is StepKind.PIVOT]
        after_pivot = {s.step_id for p in pivots for s in ch.steps_after(p, saga.name)}
        for failing in path:
            if failing.step_id in after_pivot:
                continue
            for cls in failing.fails_with:
                chain = _chain(ch, saga, path, failing, event_type_of(cls))
                if chain is not None:
                    chains.append(chain)
    return chains


def _chain(
    ch: Choreography,
    saga: Saga,
    path: tuple[HandlerSpec, ...],
    failing: HandlerSpec,
    failure: str,
) -> CompensationChain | None:
    """Return the chain ``failure`` triggers, or None when it is not derived (see module)."""
    consumers = [c for c in ch.consumers(failure) if c.kind is not StepKind.LISTENER]
    if not consumers or any(c.kind is StepKind.ORCHESTRATION for c in consumers):
        return None
    links = tuple(_walk(ch, failure))
    done = [
        spec
        for spec in path
        if spec.kind is StepKind.COMPENSATABLE
        and ch.compensations_of(spec.step_id)
        and spec.step_id != failing.step_id
        and failing in ch.steps_after(spec, saga.name)
    ]
    before = [
        (first.step_id, second.step_id)
        for first in done
        for second in ch.steps_after(first, saga.name)
        if second in done and second.step_id != first.step_id
    ]
    completed = [spec.step_id for spec in done]
    starts = [
        s.start_step_id(saga)
        for s in ch.starters(saga.name)
        if ch.compensations_of(s.start_step_id(saga))
    ]
    for start in starts:
        before.extend((start, step) for step in completed)
    return CompensationChain(
        saga=saga.name,
        failure=failure,
        failing=failing,
        completed=(*starts, *completed),
        links=links,
        before=tuple(before),
    )


def _walk(ch: Choreography, failure: str) -> Iterator[ChainLink]:
    """Yield the compensations ``failure`` triggers, breadth first, each once."""
    seen_events = {failure}
    seen_steps: set[str] = set()
    frontier = [failure]
    level = 0
    while frontier and level < MAX_LEVELS:
        level += 1
        emitted: list[str] = []
        for event_type in frontier:
            for spec in ch.consumers(event_type):
                if spec.kind is not StepKind.COMPENSATION or spec.step_id in seen_steps:
                    continue
                seen_steps.add(spec.step_id)
                yield ChainLink(level, event_type, spec)
                emitted.extend(t for t in spec.emitted_types if t not in seen_events)
                seen_events.update(spec.emitted_types)
        frontier = emitted
