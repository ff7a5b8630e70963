"""Run an orchestrator: rebuild its sagas from the log, then its worker and deadline watcher.

The orchestrator is an ordinary service run by an ordinary
:class:`~choreo.runtime.Worker` (inbox, outbox, retries, dead letters, exactly-once when
configured); :class:`OrchestratorRunner` adds what an orchestrator needs around it:

1. :meth:`start`: start the worker (topics, producer, consumer);
2. run the worker's loop, with a :class:`~choreo.orchestration.deadlines.DeadlineWatcher`
   thread publishing deadline notices. Each time the group assigns the worker partitions
   (the first poll included), the sagas of those partitions are rebuilt from the log
   (:func:`~choreo.orchestration.rebuild.rebuild`) before their records are handled; on
   a revocation they are dropped (:class:`~choreo.orchestration.ownership.Ownership`).

Replicas: run as many as the input topics have partitions; each owns the sagas of its
partitions. The state is the log, so each replica may keep its own store (a SQLite file
per replica is allowed, unlike for an ordinary service): a replica's unpublished outbox
rows belong to events whose offsets it did not commit, which the partition's next owner
handles again with the same output ids.

What survives what: a SIGKILL or a moved orchestrator replica loses only memory; the
replica that gets its partitions (or its restart) rebuilds their sagas from the log, the
worker redelivers what was not committed, and commands already published are never
decided again. With the memory store, a crash in the middle of publishing one event's
outputs (say two commands of a parallel group) can leave part of them unsent until that
step's deadline passes; a durable store (SQLite, PostgreSQL) or ``exactly_once`` makes a
handler's sends atomic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from choreo.model.envelope import now_ms
from choreo.orchestration.deadlines import DeadlineWatcher
from choreo.orchestration.declaration import Orchestrator
from choreo.orchestration.ownership import Ownership
from choreo.orchestration.rebuild import rebuild
from choreo.runtime.config import WorkerConfig
from choreo.runtime.middleware import Middleware, default_middleware
from choreo.runtime.worker import Serde, Worker
from choreo.store import Store
from choreo.transports.base import Transport

__all__ = ["OrchestratorRunner"]


class OrchestratorRunner:
    """Runs one :class:`~choreo.orchestration.Orchestrator` (see the module docs).

    ``clock_ms`` is the time the engine stamps on commands and the watcher compares
    deadlines with (a virtual clock in tests); ``watch_interval`` how often the watcher
    looks; ``rebuild=False`` skips the read of the log (a fresh bus in tests);
    ``rebuild_idle`` is the rebuild's stop after that many seconds without a record, used
    only with a transport that cannot tell where partitions end (the shipped ones read
    up to the ends, see :mod:`choreo.orchestration.rebuild`);
    ``middleware`` is the worker's (None: the default), to which the runner adds its
    :class:`~choreo.orchestration.ownership.Ownership`.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        transport: Transport,
        serde: Serde,
        *,
        config: WorkerConfig | None = None,
        inbox: Store | None = None,
        clock_ms: Callable[[], int] = now_ms,
        watch_interval: float = 0.5,
        rebuild: bool = True,
        rebuild_idle: float = 1.0,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.transport = transport
        self.serde = serde
        engine = orchestrator.engine
        inputs = frozenset(
            (config or WorkerConfig()).topic_naming(t) for t in orchestrator.service.consumed_types
        )
        self.ownership = Ownership(engine, inputs, self._rebuild_partitions if rebuild else None)
        given = default_middleware() if middleware is None else list(middleware)
        self.worker = Worker(
            orchestrator.service,
            transport,
            serde,
            config=config,
            inbox=inbox,
            middleware=[*given, self.ownership],
        )
        orchestrator.engine.clock_ms = clock_ms
        self.watcher = DeadlineWatcher(
            orchestrator,
            transport,
            serde,
            topic_naming=self.worker.config.topic_naming,
            clock_ms=clock_ms,
            interval=watch_interval,
        )
        self._rebuild_idle = rebuild_idle

    def __repr__(self) -> str:
        return f"OrchestratorRunner({self.orchestrator.name!r})"

    def start(self) -> None:
        """Start the worker (once); sagas are rebuilt as partitions are assigned."""
        self.worker.start()

    def _rebuild_partitions(self, partitions: frozenset[int]) -> None:
        """Rebuild and adopt the sagas of newly assigned ``partitions`` (worker thread)."""
        rebuild(
            self.orchestrator,
            self.transport,
            self.serde,
            topic_naming=self.worker.config.topic_naming,
            partitions=partitions,
            idle_timeout=self._rebuild_idle,
        )

    def run_once(self, timeout: float | None = None) -> int:
        """Handle one batch, then publish the deadline notices due; return the records handled."""
        self.start()
        handled = self.worker.run_once(timeout)
        self.watcher.check()
        return handled

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Handle batches until ``stop_event`` (or :meth:`stop`) is set, then close."""
        try:
            self.start()
            self.watcher.start()
            self.worker.run(stop_event)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand."""
        self.worker.stop()

    def close(self) -> None:
        """Stop the watcher and close the worker."""
        self.watcher.stop()
        self.worker.close()
