"""Which orchestrator replica owns which sagas: the partitions the group assigned it.

An orchestrator runs as N replicas in one consumer group. Every record of a saga is keyed
by its correlation id, so the saga's start, its replies and its deadline notices all land
on the same partition number of the orchestrator's input topics (they must have as many
partitions, and the group must assign partition ``p`` of every input topic to the same
member: Kafka's default eager ``range`` assignor does; a cooperative-sticky one does not,
and a warning is logged when an assignment is not aligned). The replica holding partition
``p`` owns the sagas homed there; :class:`Ownership`, a worker middleware, keeps the
orchestrator's :class:`~choreo.orchestration.engine.Engine` in step with the group:

- **on assignment**, before any record of the new partitions is handled (the hook runs
  inside the poll that delivers the assignment, before the client starts fetching them),
  the sagas of the newly assigned partition numbers are rebuilt from the log
  (:func:`~choreo.orchestration.rebuild.rebuild`) and adopted;
- **on revocation**, their runs are dropped (the worker committed its last batch first:
  no batch is in flight at a revocation), so a later re-assignment rebuilds them afresh
  from what the new owner did meanwhile;
- **per record**, the partition number is noted as the saga's home, and the deadline
  watcher only reports overdue commands of owned sagas.

Nothing is commanded twice across a rebalance: decisions are level-triggered on the
rebuilt state (a command the previous owner published is in the log, so it is not
decided again), a reply whose offset the previous owner did not commit is handled again
with the same deterministic output ids (the participant's inbox drops a copy that was
published anyway), and a deadline notice published by both the old and the new owner
has one id (the orchestrator's inbox and fold drop the copy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from choreo.runtime.middleware import EventInfo, Middleware
from choreo.transports.base import TopicPartition

if TYPE_CHECKING:
    from choreo.orchestration.engine import Engine
    from choreo.runtime.worker import Worker

__all__ = ["Ownership"]

logger = logging.getLogger(__name__)

Rebuild = Callable[[frozenset[int]], object]
"""Rebuilds (and adopts) the sagas of the given partition numbers."""


class Ownership(Middleware):
    """Keeps ``engine``'s owned sagas equal to the worker's assigned partitions.

    ``inputs`` are the orchestrator's input topics; ``rebuild`` (None: no log to read, as
    on a fresh memory bus) rebuilds the sagas of newly assigned partition numbers.
    """

    def __init__(self, engine: Engine, inputs: frozenset[str], rebuild: Rebuild | None) -> None:
        self.engine = engine
        self.inputs = inputs
        self.rebuild = rebuild
        self.assigned: dict[str, set[int]] = {}
        """Input topic -> the partition numbers assigned now."""

    def numbers(self) -> frozenset[int]:
        """Return the partition numbers assigned on any input topic."""
        return frozenset(p for parts in self.assigned.values() for p in parts)

    def before_dispatch(self, worker: Worker, info: EventInfo) -> None:
        """Note the partition of the record about to be handled (the saga's home)."""
        self.engine.handling(info.record.partition)

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Own the new partition numbers; rebuild their sagas before their records come."""
        before = self.numbers()
        for tp in partitions:
            if tp.topic in self.inputs:
                self.assigned.setdefault(tp.topic, set()).add(tp.partition)
        now = self.numbers()
        self._check_aligned(now)
        new = now - before
        if new and self.rebuild is not None:
            self.rebuild(new)
        self.engine.own(now)
        logger.info(
            "%s: owns the sagas of partition(s) %s (new: %s)",
            self.engine.orch.name,
            sorted(now),
            sorted(new),
        )

    def on_revoke(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Stop owning the revoked partition numbers and drop their sagas."""
        before = self.numbers()
        for tp in partitions:
            self.assigned.get(tp.topic, set()).discard(tp.partition)
        now = self.numbers()
        gone = before - now
        self.engine.own(now)
        dropped = self.engine.release(gone) if gone else 0
        logger.info(
            "%s: partition(s) %s revoked, %d saga(s) dropped",
            self.engine.orch.name,
            sorted(gone),
            dropped,
        )

    def _check_aligned(self, numbers: frozenset[int]) -> None:
        """Warn when some input topic lacks a partition number another one has."""
        if len(self.inputs) < 2:
            return
        missing = sorted(
            f"{topic}[{p}]"
            for topic in sorted(self.inputs)
            for p in numbers - self.assigned.get(topic, set())
        )
        if missing:
            logger.warning(
                "%s: the assignment is not aligned across the input topics (missing %s): "
                "give them the same partition count and use the range assignor, or one "
                "saga's records reach two replicas",
                self.engine.orch.name,
                ", ".join(missing[:5]),
            )
