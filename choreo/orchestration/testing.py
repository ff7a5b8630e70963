"""Test orchestrated sagas like choreographed ones: one memory bus, lockstep, virtual time.

:class:`OrchestrationTestKit` is a :class:`~choreo.testing.SagaTestKit` that also takes
:class:`~choreo.orchestration.Orchestrator` objects. Each orchestrator runs on a real
worker like any service, and the kit drives its deadline watcher with a *virtual clock*:
:meth:`~OrchestrationTestKit.advance` moves time forward, so step deadlines pass without
waiting. Given the participants, when a saga starts (and time passes), expect its events::

    with OrchestrationTestKit([orchestrator, inventory, payment], schemas_dir="schemas") as kit:
        cid = kit.when(OrderSaga, OrderSubmitted(...), service=orders)   # start, run until idle
        kit.advance(30)                                                   # a step times out
        kit.expect(cid, [ReserveInventory, ReserveInventorySucceeded, SagaTimedOut, ...])
        assert kit.phase(orchestrator, cid) is Phase.FAILED
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError
from choreo.model.envelope import Role, now_ms
from choreo.model.events import Event, event_type_of
from choreo.orchestration.deadlines import DeadlineWatcher
from choreo.orchestration.declaration import Orchestrator
from choreo.orchestration.state import Phase
from choreo.testing import SagaTestKit

__all__ = ["OrchestrationTestKit"]


class OrchestrationTestKit(SagaTestKit):
    """A :class:`~choreo.testing.SagaTestKit` for services and orchestrators, on virtual time.

    ``services`` may mix :class:`~choreo.choreography.service.Service` and
    :class:`~choreo.orchestration.Orchestrator` objects; other arguments are the base
    kit's. The virtual clock starts at the wall clock and only moves with :meth:`advance`.
    """

    def __init__(self, services: Iterable[Service | Orchestrator], **options: Any) -> None:
        given = list(services)
        self.orchestrators = [s for s in given if isinstance(s, Orchestrator)]
        plain = [s.service if isinstance(s, Orchestrator) else s for s in given]
        super().__init__(plain, **options)
        self._now = now_ms()
        self.watchers: list[DeadlineWatcher] = []
        for orch in self.orchestrators:
            orch.engine.clock_ms = self.clock_ms
            self.watchers.append(
                DeadlineWatcher(
                    orch,
                    self.transport,
                    self.serde,
                    topic_naming=self.config.topic_naming,
                    clock_ms=self.clock_ms,
                )
            )

    def clock_ms(self) -> int:
        """Return the virtual time in epoch milliseconds."""
        return self._now

    def close(self) -> None:
        """Close the watchers, then every worker and publisher."""
        for watcher in self.watchers:
            watcher.stop()
        super().close()

    def run_once(self, timeout: float = 0.0) -> int:
        """Give every worker one batch, then let the watchers notice deadlines at virtual now."""
        handled = super().run_once(timeout)
        for watcher in self.watchers:
            handled += len(watcher.check(self._now))
        return handled

    def advance(self, seconds: float) -> int:
        """Move the virtual clock ``seconds`` forward, then run until idle; return the handled."""
        if seconds < 0:
            raise ConfigurationError("time only moves forward")
        self._now += int(seconds * 1000)
        return self.run_until_idle()

    # --- given / when / expect ----------------------------------------------------------

    def when(
        self,
        saga: Saga,
        event: Event,
        *,
        correlation_id: str | None = None,
        service: Service | None = None,
    ) -> str:
        """Start ``saga`` with ``event`` and run until idle; return the correlation id."""
        cid = self.start(saga, event, correlation_id=correlation_id, service=service)
        self.run_until_idle()
        return cid

    def expect(
        self, correlation_id: str, expected: Sequence[type[Event]], *, notices: bool = False
    ) -> None:
        """Assert the saga's events are exactly ``expected``, in publication order.

        The orchestrator's deadline notices and other ``notice`` events are left out
        unless ``notices`` is set.
        """
        seen = [
            e.event_type
            for e in self.events(correlation_id)
            if notices or e.envelope.role is not Role.NOTICE
        ]
        wanted = [event_type_of(cls) for cls in expected]
        if seen != wanted:
            lines = "\n".join(f"  {t}" for t in wanted)
            raise AssertionError(
                f"saga {correlation_id}: expected\n{lines}\nsaw:\n{self.timeline(correlation_id)}"
            )

    def phase(self, orchestrator: Orchestrator, correlation_id: str) -> Phase:
        """Return where ``orchestrator`` has saga ``correlation_id`` (KeyError if unknown)."""
        with orchestrator.engine.lock:
            return orchestrator.engine.runs[correlation_id].phase
