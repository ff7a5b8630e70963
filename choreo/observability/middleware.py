"""Keeps a :class:`~choreo.observability.health.Health` told of what a worker does.

:class:`HealthMiddleware` marks the worker started at its first poll, counts each
finished poll and each dispatched event as progress of the loop (so a long batch of slow
but advancing handlers stays live, and a handler that blocks does not), and passes
assignments and revocations on. Install it with the worker's other middleware; ``choreo
run --metrics-port`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from choreo.observability.health import Health
from choreo.runtime.middleware import EventInfo, Middleware, Outcome
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record, TopicPartition

if TYPE_CHECKING:
    from choreo.runtime.worker import Worker

__all__ = ["HealthMiddleware"]


class HealthMiddleware(Middleware):
    """Tells ``health`` when the worker polls, handles events and gains or loses partitions."""

    def __init__(self, health: Health) -> None:
        self.health = health
        self._started = False

    def before_poll(self, worker: Worker) -> None:
        """Mark the worker started at its first poll."""
        if not self._started:
            self._started = True
            self.health.started()

    def after_poll(self, worker: Worker, records: list[Record]) -> None:
        """Count a finished poll as progress."""
        self.health.polled()

    def after_dispatch(
        self,
        worker: Worker,
        event: EventInfo,
        outcome: Outcome,
        emitted: Sequence[OutboxRecord],
        error: BaseException | None,
    ) -> None:
        """Count a dispatched event as progress."""
        self.health.progress += 1

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Pass an assignment on."""
        self.health.assigned(partitions)

    def on_revoke(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Pass a revocation on."""
        self.health.revoked(partitions)
