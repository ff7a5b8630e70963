"""Liveness and readiness of a worker, for Kubernetes probes.

A :class:`Health` is told what the worker does (started, polled, partitions assigned or
revoked, stopped) by :class:`~choreo.observability.middleware.HealthMiddleware` and
answers two questions, served as ``/healthz`` and ``/readyz`` by
:class:`~choreo.observability.server.ObservabilityServer`:

- **live**: the poll loop ran (or finished an event) within the last ``stall_after``
  seconds (or the worker started less than ``stall_after`` seconds ago and has not
  polled yet). A handler that blocks, a loop stuck in a lock, or a worker that stopped
  polling make it not live, and Kubernetes restarts the pod. Give ``stall_after`` more
  than the longest retry backoff and the slowest single handler call.
- **ready**: live, started and not stopped, and the consumer group has been joined: an
  assignment was received and not all of it revoked since. An assignment may be empty
  (more replicas than partitions): such a replica is ready and idle.

Every method is thread-safe: the worker thread writes plain attributes, the HTTP
server's threads read them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from choreo.transports.base import TopicPartition

__all__ = ["Health", "Probe"]


@dataclass(frozen=True, slots=True)
class Probe:
    """The answer to one probe: ``ok`` and the facts it was decided on (JSON-ready)."""

    ok: bool
    detail: dict[str, Any]


class Health:
    """What a worker's probes answer (see the module docs).

    ``stall_after`` is the liveness threshold in seconds; ``clock`` returns monotonic
    seconds (injectable for tests).
    """

    def __init__(
        self, *, stall_after: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if stall_after <= 0:
            raise ValueError("stall_after must be > 0")
        self.stall_after = stall_after
        self._clock = clock
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self._last_poll: float | None = None
        self._stopped = False
        self._joined = False
        self._assigned: set[TopicPartition] = set()
        self._seen_progress = 0

    # --- told by the worker ---------------------------------------------------------

    def started(self) -> None:
        """Record that the worker started (its clock for the first poll starts now)."""
        with self._lock:
            self._started_at = self._clock()
            self._stopped = False

    def polled(self) -> None:
        """Record that the poll loop just ran (called once per poll: keep it cheap)."""
        self._last_poll = self._clock()

    progress = 0
    """Events finished so far: the worker adds 1 per event (the cheapest signal there is).

    A probe that finds it moved since the previous probe counts that as the loop's
    progress at the probe's time, so a long batch of slow but advancing handlers stays
    live (to within the probes' period) while a handler that blocks does not.
    """

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Record an assignment: the group is joined and ``partitions`` are now owned."""
        with self._lock:
            self._assigned.update(partitions)
            self._joined = True

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Record a revocation; once nothing is left the group counts as left until reassigned."""
        with self._lock:
            self._assigned.difference_update(partitions)
            if not self._assigned:
                self._joined = False

    def stopped(self) -> None:
        """Record that the worker closed: not ready any more."""
        with self._lock:
            self._stopped = True
            self._joined = False
            self._assigned.clear()

    # --- asked by the probes --------------------------------------------------------

    def liveness(self) -> Probe:
        """Return whether the poll loop ran recently enough (see the module docs)."""
        now = self._clock()
        with self._lock:
            if self.progress != self._seen_progress:
                self._seen_progress = self.progress
                self._last_poll = now
            started, last = self._started_at, self._last_poll
        since = last if last is not None and (started is None or last >= started) else started
        if since is None:  # not started yet: the process is alive and setting up
            return Probe(True, {"live": True, "state": "starting"})
        idle = now - since
        ok = idle <= self.stall_after
        return Probe(
            ok,
            {
                "live": ok,
                "seconds_since_poll": round(idle, 3),
                "stall_after": self.stall_after,
            },
        )

    def readiness(self) -> Probe:
        """Return whether the worker is live, running and in its consumer group."""
        live = self.liveness()
        with self._lock:
            running = self._started_at is not None and not self._stopped
            joined = self._joined
            partitions = sorted(f"{tp.topic}[{tp.partition}]" for tp in self._assigned)
        ok = live.ok and running and joined
        return Probe(
            ok,
            {
                "ready": ok,
                "live": live.ok,
                "running": running,
                "joined": joined,
                "partitions": len(partitions),
                "assigned": partitions[:100],
            },
        )
