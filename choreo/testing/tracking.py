"""The test kit's tracker: the kit's own log folded by a real :class:`~choreo.tracker.Tracker`.

:class:`KitTracking` feeds every record the kit saw published (events, timeouts,
deadline notices, dead letters) to one tracker that knows the kit's services (their
deadlines and compensatable steps) and reads the kit's virtual clock, so a test asserts
what ``choreo sagas``, ``choreo trace`` and ``choreo verify`` would show for the same
run: each saga's state and status, its timeline, its deadline, and the saga-guarantee
findings. The tracker is brought up to date (new records fed, deadlines checked at the
virtual now) each time it is asked for.

With ``timeouts`` on, a :class:`~choreo.tracker.TimeoutService` turns the sagas whose
deadline passed on the virtual clock into ``choreo.SagaTimedOut`` failures, exactly as
``choreo run``'s tracker does in production; services that compensate on
``SagaTimedOut`` then undo the completed steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from choreo.choreography.service import Service
from choreo.model.events import SagaTimedOut
from choreo.model.topics import TopicNaming
from choreo.runtime.serdes import Serde
from choreo.testing.clock import VirtualClock
from choreo.testing.records import PublishedRecord
from choreo.tracker import TIMEOUT_EVENT_TYPE, TimeoutService, Tracker
from choreo.tracker.model import SagaTrace
from choreo.tracker.verify import VerifyReport, verify_tracker
from choreo.transports.base import Transport

__all__ = ["KitTracking"]


class KitTracking:
    """One tracker over a kit's log of published records, on the kit's virtual clock."""

    def __init__(
        self,
        services: Sequence[Service],
        log: list[PublishedRecord],
        clock: VirtualClock,
        serde: Serde,
        *,
        transport: Transport,
        topic_naming: TopicNaming,
        timeouts: bool = False,
    ) -> None:
        self._log = log
        self._clock = clock
        decode: Callable[[bytes], Any] | None = getattr(serde, "decode_dict", None)
        self.tracker = Tracker(choreography=list(services), clock=clock.now, decode=decode)
        self._fed = 0
        self.timeouts: TimeoutService | None = None
        if timeouts:
            register = getattr(serde, "register", None)
            if callable(register):  # the kit's serde knows the services' events only
                register(SagaTimedOut)
            self.timeouts = TimeoutService(
                self.tracker,
                transport,
                lambda _name, datum: serde.encode(SagaTimedOut(**datum)),
                topic=topic_naming(TIMEOUT_EVENT_TYPE),
                clock_ms=clock.now_ms,
            )

    def current(self) -> Tracker:
        """Return the tracker with every record published so far fed, deadlines checked now."""
        fresh = self._log[self._fed :]
        if fresh:
            self.tracker.feed_many(fresh)
            self._fed += len(fresh)
        self.tracker.check_deadlines(self._clock.now_ms())
        return self.tracker

    def trace(self, correlation_id: str) -> SagaTrace:
        """Return the tracker's trace of one saga; AssertionError when it never saw it."""
        trace = self.current().get(correlation_id)
        if trace is None:
            raise AssertionError(f"the tracker saw no event of saga {correlation_id}")
        return trace

    def verify(self) -> VerifyReport:
        """Return ``choreo verify``'s report over everything the kit published."""
        return verify_tracker(self.current())

    def time_out(self) -> int:
        """Publish the timeouts due at the virtual now (without ``timeouts``: none); count them."""
        if self.timeouts is None:
            return 0
        self.current()
        return len(self.timeouts.run_once(self._clock.now_ms()))

    def close(self) -> None:
        """Stop the timeout service (closing its producer)."""
        if self.timeouts is not None:
            self.timeouts.stop()
