"""The saga test kit: services and orchestrators on one bus, in lockstep, on virtual time.

See :mod:`choreo.testing` for the guide; this module holds :class:`SagaTestKit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from choreo.choreography.service import Retry, Saga, Service
from choreo.errors import ConfigurationError
from choreo.model.events import Event
from choreo.orchestration.deadlines import DeadlineWatcher
from choreo.orchestration.declaration import Orchestrator
from choreo.orchestration.state import Phase
from choreo.runtime.config import WorkerConfig
from choreo.runtime.publisher import Publisher
from choreo.runtime.serdes import serde_for
from choreo.runtime.worker import Serde, Worker
from choreo.store import Store, execute
from choreo.testing.clock import VirtualClock
from choreo.testing.expectations import KitReading
from choreo.testing.recording import RecordingTransport
from choreo.testing.records import PublishedRecord
from choreo.testing.stores import KitStores, StoreChoice
from choreo.testing.tracking import KitTracking
from choreo.tracker import Tracker
from choreo.tracker.verify import VerifyReport
from choreo.transports.base import Headers, Transport

__all__ = ["SagaTestKit"]

_NO_WAIT = Retry(max_attempts=5, backoff=0.0, jitter=False)
_NO_WAIT_COMPENSATION = Retry(max_attempts=20, backoff=0.0, jitter=False)

Setup = str | Callable[[Any], object]
"""What :meth:`SagaTestKit.given` runs: SQL (``?`` placeholders) or a function of ``ctx.db``."""


class SagaTestKit(KitReading):
    """Runs ``services`` (and orchestrators) on one bus; given, when, expect, on virtual time.

    Give the schemas as ``schemas_dir`` (a directory of ``.avsc`` files) or ``registry``
    (a loaded schema registry), or a ready ``serde``. ``services`` may mix
    :class:`~choreo.Service` and :class:`~choreo.orchestration.Orchestrator` objects.
    Each service gets a store of production's kind, a SQLite database in memory, unless
    ``stores`` gives one (a mapping of service name to store, or a function of the
    service); handlers get its connection as ``ctx.db``. ``timeouts`` runs the
    tracker's timeout service on the virtual clock; ``start_ms`` is where that clock
    starts (default: the wall clock). ``transport``, ``config`` and ``group_prefix``
    run the kit elsewhere or otherwise (see :mod:`choreo.testing`).
    """

    def __init__(
        self,
        services: Iterable[Service | Orchestrator],
        *,
        schemas_dir: str | Path | None = None,
        registry: Any = None,
        serde: Serde | None = None,
        transport: Transport | None = None,
        config: WorkerConfig | None = None,
        group_prefix: str = "",
        stores: StoreChoice = None,
        timeouts: bool = False,
        start_ms: int | None = None,
    ) -> None:
        given = list(services)
        self.orchestrators: list[Orchestrator] = [s for s in given if isinstance(s, Orchestrator)]
        self.services: list[Service] = [
            s.service if isinstance(s, Orchestrator) else s for s in given
        ]
        if not self.services:
            raise ConfigurationError("SagaTestKit needs at least one service")
        if serde is None:
            serde = serde_for(self.services, schemas_dir=schemas_dir, registry=registry)
        self.serde = serde
        if transport is None:
            from choreo.transports.memory import MemoryTransport

            transport = MemoryTransport()
        self.clock = VirtualClock(start_ms)
        """The kit's time: it moves only with :meth:`advance`."""
        self.published: list[PublishedRecord] = []
        """Every acknowledged record, in publication order (``offset`` is the position)."""
        self.transport = RecordingTransport(transport, self.published)
        base = config or WorkerConfig(
            poll_timeout=0.0, retry=_NO_WAIT, compensation_retry=_NO_WAIT_COMPENSATION
        )
        self.config = replace(base, clock_ms=self.clock.tick)
        self.stores = KitStores(self.services, stores)
        self.workers: dict[str, Worker] = {}
        self._publishers: dict[str, Publisher] = {}
        self._decoded: dict[int, Event] = {}
        self.watchers: list[DeadlineWatcher] = []
        self.tracking = KitTracking(
            self.services,
            self.published,
            self.clock,
            serde,
            transport=self.transport,
            topic_naming=self.config.topic_naming,
            timeouts=timeouts,
        )
        try:
            self._start(group_prefix)
        except BaseException:
            self.close()
            raise
        self._deadletter_topics = {w.deadletter_topic for w in self.workers.values()}

    def _start(self, group_prefix: str) -> None:
        """Build a worker per service with handlers, and a deadline watcher per orchestrator."""
        for service in self.services:
            if not service.handlers:
                continue
            config = self.config
            if group_prefix:
                config = replace(config, group_id=f"{group_prefix}{service.name}")
            self.workers[service.name] = Worker(
                service, self.transport, self.serde, config=config, inbox=self.stores.of(service)
            )
        for orch in self.orchestrators:
            orch.engine.clock_ms = self.clock.now_ms
            self.watchers.append(
                DeadlineWatcher(
                    orch,
                    self.transport,
                    self.serde,
                    topic_naming=self.config.topic_naming,
                    clock_ms=self.clock.now_ms,
                )
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the watchers, workers and publishers, then the stores the kit opened."""
        for watcher in self.watchers:
            watcher.stop()
        self.tracking.close()
        for worker in self.workers.values():
            worker.close()
        for publisher in self._publishers.values():
            publisher.close()
        self.stores.close()

    # --- given -----------------------------------------------------------------------

    def given(
        self, service: Service | Orchestrator, setup: Setup, params: Sequence[Any] = ()
    ) -> None:
        """Arrange the state ``service`` starts from, in its store (its migrations applied).

        ``setup`` is SQL with ``?`` placeholders (run with ``params``) or a function
        called with the store's connection, the one handlers get as ``ctx.db``; it runs
        in one transaction, committed when it returns.
        """
        if isinstance(setup, str):
            sql = setup
            self.stores.run(self._service(service), lambda db: execute(db, sql, params))
        else:
            self.stores.run(self._service(service), setup)

    def query(
        self, service: Service | Orchestrator, sql: str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Return the rows of ``sql`` (``?`` placeholders) on ``service``'s store, as tuples."""
        store = self.stores.prepare(self._service(service))
        return [tuple(row) for row in execute(store.connection, sql, params).fetchall()]

    def store(self, service: Service | Orchestrator | str) -> Store:
        """Return the store ``service``'s worker runs on (whose connection is ``ctx.db``)."""
        return self.stores.of(service if isinstance(service, str) else self._service(service))

    def _service(self, service: Service | Orchestrator) -> Service:
        return service.service if isinstance(service, Orchestrator) else service

    # --- when ------------------------------------------------------------------------

    def start(
        self,
        saga: Saga,
        event: Event,
        *,
        correlation_id: str | None = None,
        service: Service | None = None,
        db_work: Callable[[Any], None] | None = None,
    ) -> str:
        """Publish ``event`` as the start of ``saga``; return the correlation id.

        The start is published by ``service``, or by the kit's service that declares it
        starts ``saga``, through a :class:`~choreo.Publisher` on that service's store
        (``db_work`` runs in the same transaction, as in production).
        """
        if service is None:
            starters = [s for s in self.services if saga.name in {x.name for x in s.started_sagas}]
            if not starters:
                raise ConfigurationError(f"no service of the kit starts saga {saga.name}")
            service = starters[0]
        publisher = self.publisher(service)
        return publisher.start(saga, event, correlation_id=correlation_id, db_work=db_work)

    def publisher(self, service: Service) -> Publisher:
        """Return the kit's :class:`~choreo.Publisher` for ``service`` (one per service).

        It publishes through the kit, on the service's store and the virtual clock: hand
        it to code of yours that starts sagas with a publisher. A publisher built by
        hand on ``kit.transport`` would stamp its events with the wall clock instead.
        """
        publisher = self._publishers.get(service.name)
        if publisher is None:
            publisher = self._publishers[service.name] = Publisher(
                service,
                self.transport,
                self.serde,
                config=self.config,
                inbox=self.stores.prepare(service),
            )
        return publisher

    def when(
        self,
        saga: Saga,
        event: Event,
        *,
        correlation_id: str | None = None,
        service: Service | None = None,
        db_work: Callable[[Any], None] | None = None,
    ) -> str:
        """Start ``saga`` with ``event`` (see :meth:`start`), run until idle; return the id."""
        cid = self.start(
            saga, event, correlation_id=correlation_id, service=service, db_work=db_work
        )
        self.run_until_idle()
        return cid

    def advance(self, seconds: float) -> int:
        """Let ``seconds`` of virtual time pass, then run until idle; return the records handled.

        Deadlines that pass meanwhile fire as in production: orchestrators' step
        deadlines, and with ``timeouts`` the tracker's saga timeouts (and whatever
        compensations they start); without ``timeouts`` an overdue saga shows as Stuck.
        """
        self.clock.advance(seconds)
        handled = self.run_until_idle()
        while sent := self.tracking.time_out():
            handled += sent + self.run_until_idle()
        return handled

    def run_once(self, timeout: float = 0.0) -> int:
        """Give every worker one batch, in order; return how many records they handled.

        ``timeout`` is how long each worker's poll may wait for records. Then the
        orchestrators' deadline watchers publish the notices due at the virtual now.
        """
        handled = sum(worker.run_once(timeout) for worker in self.workers.values())
        now = self.clock.now_ms()
        for watcher in self.watchers:
            handled += len(watcher.check(now))
        return handled

    def run_until(
        self, condition: Callable[[], bool], *, timeout: float = 60.0, poll_timeout: float = 0.1
    ) -> int:
        """Run rounds until ``condition()`` is true; return the records handled.

        For transports where records arrive asynchronously (a real broker). Raises
        :class:`AssertionError` when ``timeout`` (wall-clock) seconds pass first.
        """
        for worker in self.workers.values():
            worker.start()
        deadline = time.monotonic() + timeout
        total = 0
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s ({total} handled)")
            total += self.run_once(poll_timeout)
        return total

    def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Run rounds until no worker handles anything; return the records handled.

        Raises :class:`AssertionError` if the services are still busy after
        ``max_rounds`` rounds (an endless ping-pong of events).
        """
        total = 0
        for _ in range(max_rounds):
            handled = self.run_once()
            if not handled:
                return total
            total += handled
        raise AssertionError(f"still busy after {max_rounds} rounds ({total} records handled)")

    def publish_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        """Publish a hand-made record (e.g. a poison message) to ``topic``."""
        producer = self.transport.producer()
        try:
            producer.publish(topic, value, key=key, headers=headers)
            producer.flush()
        finally:
            producer.close()

    # --- the tracker and the orchestrators ---------------------------------------------

    def clock_ms(self) -> int:
        """Return the virtual time in epoch milliseconds."""
        return self.clock.now_ms()

    def tracker(self) -> Tracker:
        """Return the kit's :class:`~choreo.tracker.Tracker`, fed with everything published.

        It knows the kit's services (deadlines, compensatable steps) and reads the virtual
        clock; each call feeds what was published since and checks deadlines at the
        virtual now. Ask it what ``choreo sagas`` would: ``kit.tracker().counts()``.
        """
        return self.tracking.current()

    def verify(self) -> VerifyReport:
        """Return what ``choreo verify`` says about every saga the kit ran."""
        return self.tracking.verify()

    def phase(self, orchestrator: Orchestrator, correlation_id: str) -> Phase:
        """Return where ``orchestrator`` has saga ``correlation_id`` (KeyError if unknown)."""
        with orchestrator.engine.lock:
            return orchestrator.engine.runs[correlation_id].phase
