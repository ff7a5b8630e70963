"""The test kit's virtual clock: time that moves only when the test says so.

Everything time-dependent in a kit run reads this clock: the produced-at time of every
event (through :attr:`WorkerConfig.clock_ms <choreo.runtime.config.WorkerConfig>`), so
deadlines count from it; the tracker's deadline checks; the timeout service; and the
orchestrators' step deadlines. A test passes an hour in no time with
:meth:`~choreo.testing.SagaTestKit.advance`, and the outcome does not depend on how fast
the machine runs the test.

Time also moves one millisecond with each batch a worker handles (each start event
too): :meth:`VirtualClock.tick` is the workers' clock. So events are stamped in the order
they were produced, as on a real bus where handling takes time, and the tracker orders
events of parallel branches as it would in production. A deadline counts from the
saga's last event, so these milliseconds never make a saga overdue by themselves.
"""

from __future__ import annotations

from choreo.errors import ConfigurationError
from choreo.model.envelope import now_ms

__all__ = ["VirtualClock"]


class VirtualClock:
    """Epoch milliseconds that start at ``start_ms`` (default: the wall clock) and only advance."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = now_ms() if start_ms is None else int(start_ms)

    def __repr__(self) -> str:
        return f"VirtualClock({self._now})"

    def now_ms(self) -> int:
        """Return the virtual time in epoch milliseconds."""
        return self._now

    def tick(self) -> int:
        """Return the virtual time, then move it one millisecond on (a batch's stamp)."""
        now = self._now
        self._now = now + 1
        return now

    def now(self) -> float:
        """Return the virtual time in epoch seconds (the tracker's clock)."""
        return self._now / 1000

    def advance(self, seconds: float) -> int:
        """Move the clock ``seconds`` forward; return the new time in epoch milliseconds."""
        if seconds < 0:
            raise ConfigurationError("time only moves forward: advance() takes seconds >= 0")
        self._now += round(seconds * 1000)
        return self._now
