"""One start of an :class:`~choreo.app.App`: its transport, stores, workers, publishers, tracker.

:class:`AppRun` is what :meth:`App.in_memory <choreo.app.App.in_memory>` and
:meth:`App.on_kafka <choreo.app.App.on_kafka>` return, already running: one thread per
worker, a live tracker thread (unless ``track=False``) and, with ``timeouts=True``, the
thread that fails overdue sagas. Start sagas with :meth:`AppRun.start`, wait for one with
:meth:`AppRun.wait`, and :meth:`AppRun.close` (or leave the ``with`` block) to stop: each
worker finishes the batch in hand, publishes and commits it, then the stores close.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from choreo.app.parts import find_starter
from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError, FatalError
from choreo.model.events import Event, event_type_of
from choreo.runtime.config import WorkerConfig, topic_replication
from choreo.runtime.serdes import event_classes

if TYPE_CHECKING:
    from choreo.app.parts import Member, Target, Wiring
    from choreo.avro.codec import SingleObjectCodec
    from choreo.avro.serde import EventSerde
    from choreo.orchestration import OrchestratorRunner
    from choreo.runtime import Publisher, Worker
    from choreo.store.base import Store
    from choreo.tracker.live import LiveTracker
    from choreo.tracker.model import SagaTrace
    from choreo.tracker.timeouts import TimeoutService
    from choreo.tracker.tracker import Tracker
    from choreo.transports.base import Transport

__all__ = ["AppRun"]

logger = logging.getLogger(__name__)

_JOIN_S = 30.0


class AppRun:
    """A running :class:`~choreo.app.App` (see the module docs); use it as a context manager.

    Its parts are public for those who want one of them: :attr:`transport`,
    :attr:`serde`, :attr:`codec`, :attr:`stores` and :attr:`workers` (by service name),
    :attr:`tracker` (None with ``track=False``) and :attr:`data_dir` (where the default
    SQLite stores are).
    """

    def __init__(
        self, app: Wiring, target: Target, data_dir: Path | None, *, temp_dir: bool
    ) -> None:
        self.app = app
        self.target = target
        self.run_id = uuid.uuid4().hex[:8]
        self.data_dir = Path(tempfile.mkdtemp(prefix="choreo-app-")) if temp_dir else data_dir
        self._temp_dir = temp_dir
        self.transport: Transport | None = None
        self.codec: SingleObjectCodec | None = None
        self.serde: EventSerde | None = None
        self.config = app.config or WorkerConfig()
        self.stores: dict[str, Store] = {}
        self.workers: dict[str, Worker | OrchestratorRunner] = {}
        self.tracker: Tracker | None = None
        self._live: LiveTracker | None = None
        self._timeouts: TimeoutService | None = None
        self._publishers: dict[str, Publisher] = {}
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._launched = False
        self._stopped = False
        self._closed = False

    def __repr__(self) -> str:
        where = self.target.bootstrap or self.target.kind
        return f"AppRun({[m.service.name for m in self.app.members]}, on={where!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- starting --------------------------------------------------------------------

    def launch(self) -> None:
        """Build the serde, transport, stores and tracker, then start a thread per worker.

        :class:`~choreo.app.App` calls it; a second call does nothing.
        """
        if self._launched:
            return
        self._launched = True
        from choreo.avro.codec import SingleObjectCodec
        from choreo.avro.loader import load_directory
        from choreo.avro.serde import EventSerde

        app = self.app
        services = app.services
        registry = app.registry
        if registry is None:
            assert app.schemas is not None  # App requires one of the two
            registry = load_directory(app.schemas)
        self.codec = codec = SingleObjectCodec(registry)
        self.serde = EventSerde(codec, event_classes(services))
        self.transport = self._open_transport()
        self.config = self._base_config()
        self._create_topics()
        if app.track:
            self._start_tracker()
        for member in app.members:
            self.stores[member.service.name] = self._open_store(member.service.name)
        for member in app.members:
            if member.runs_worker and self.target.workers:
                self._start_worker(member)

    def _open_transport(self) -> Transport:
        """Return the transport of the target (a Kafka client's missing extra is named)."""
        from choreo.transports.factory import open_transport

        target = self.target
        if target.kind == "memory":
            return open_transport("memory", bus=target.bus)
        return open_transport(target.kind, bootstrap=target.bootstrap, config=target.kafka)

    def _base_config(self) -> WorkerConfig:
        """Return the app's worker config with its topic prefix and partitions applied."""
        config, prefix = self.app.config, self.app.topic_prefix
        if config is None:  # in memory, a short poll makes stopping quick and costs nothing
            memory = self.target.kind == "memory"
            config = WorkerConfig(poll_timeout=0.2) if memory else WorkerConfig()
        if self.target.kind != "memory":
            config = replace(config, topic_partitions=self.target.partitions)
        if not prefix:
            return config
        topic_naming, deadletter_naming = config.topic_naming, config.deadletter_naming
        return replace(
            config,
            topic_naming=lambda event_type: prefix + topic_naming(event_type),
            deadletter_naming=lambda service: prefix + deadletter_naming(service),
        )

    def _topics(self) -> list[str]:
        """Return every topic the app's services and its tracker read or write."""
        from choreo.tracker.fold import TIMEOUT_EVENT_TYPE

        config = self.config
        topics = {config.topic_naming(event_type_of(c)) for c in event_classes(self.app.services)}
        topics |= {config.deadletter_naming(s.name) for s in self.app.services}
        if self.app.timeouts:
            topics.add(config.topic_naming(TIMEOUT_EVENT_TYPE))
        return sorted(topics)

    def _create_topics(self) -> None:
        """Create the app's topics up front, so the tracker can subscribe to them by name."""
        assert self.transport is not None
        if self.config.create_topics:
            self.transport.create_topics(
                self._topics(),
                partitions=self.config.topic_partitions,
                **topic_replication(self.config),
            )

    def _start_tracker(self) -> None:
        """Start the live tracker over the app's topics (and the timeouts, when asked)."""
        from choreo.app.tracking import start_tracking

        assert self.codec is not None and self.transport is not None
        self.tracker, self._live, self._timeouts = start_tracking(
            self.app,
            self.transport,
            self.codec,
            self.config,
            topics=self._topics(),
            group_id=f"{self.app.topic_prefix}choreo-app-tracker-{self.run_id}",
        )

    def _open_store(self, name: str) -> Store:
        """Return service ``name``'s store as the app's ``store`` option says."""
        from choreo.store import SqliteStore, open_store

        store = self.app.store
        if callable(store):
            return store(name)
        if isinstance(store, str):
            return open_store(store.replace("{service}", name))
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        suffix = ".sqlite3" if self.target.kind == "memory" else ".inbox.db"
        return SqliteStore(self.data_dir / f"{name}{suffix}")

    def _start_worker(self, member: Member) -> None:
        """Start the worker thread of ``member`` (an orchestrator's runner for an orchestrator)."""
        from choreo.runtime import Worker

        assert self.transport is not None and self.serde is not None
        name = member.service.name
        config = replace(self.config, group_id=f"{self.app.topic_prefix}{name}")
        worker: Worker | OrchestratorRunner
        if member.orchestrator is not None:
            from choreo.orchestration import OrchestratorRunner

            worker = OrchestratorRunner(
                member.orchestrator,
                self.transport,
                self.serde,
                config=config,
                inbox=self.stores[name],
            )
        else:
            worker = Worker(
                member.service, self.transport, self.serde, config=config, inbox=self.stores[name]
            )
        self.workers[name] = worker
        thread = threading.Thread(
            target=self._run_worker, args=(worker, name), name=f"choreo-app-{name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _run_worker(self, worker: Worker | OrchestratorRunner, name: str) -> None:
        """Run ``worker`` until the run stops; keep the error that ended it early."""
        try:
            worker.run(self._stop)
        except BaseException as exc:
            if isinstance(exc, FatalError):  # it says why, in full: no traceback needed
                logger.error("[%s] %s", name, exc)
                logger.debug("[%s] the worker's traceback", name, exc_info=exc)
            else:
                logger.exception("[%s] worker stopped", name)
            with self._lock:
                self._errors.append(exc)

    # --- using -----------------------------------------------------------------------

    def publisher(
        self, service: Service | str | None = None, saga: Saga | None = None
    ) -> Publisher:
        """Return the :class:`~choreo.runtime.Publisher` of ``service`` (on its own store).

        Without ``service``: the service that declares it starts ``saga`` (or, with no
        ``saga``, the only service that starts any saga). Its outbox is the service's
        store, so ``db_work`` given to :meth:`Publisher.start` commits with the event.
        """
        from choreo.runtime import Publisher

        found = find_starter(self.app.services, service, saga)
        with self._lock:
            publisher = self._publishers.get(found.name)
            if publisher is None:
                assert self.transport is not None and self.serde is not None
                publisher = self._publishers[found.name] = Publisher(
                    found,
                    self.transport,
                    self.serde,
                    inbox=self.stores[found.name],
                    config=self.config,
                )
        return publisher

    def start(
        self,
        saga: Saga,
        event: Event,
        *,
        correlation_id: str | None = None,
        service: Service | str | None = None,
        db_work: Callable[[Any], None] | None = None,
    ) -> str:
        """Publish ``event`` as the start of ``saga``; return its correlation id.

        Published by ``service``, or by the app's service that declares it starts
        ``saga``; ``correlation_id`` and ``db_work`` are those of
        :meth:`Publisher.start <choreo.runtime.Publisher.start>`. Returns once the
        transport acknowledged the event.
        """
        self.raise_failure()
        publisher = self.publisher(service, saga)
        return publisher.start(saga, event, correlation_id=correlation_id, db_work=db_work)

    def wait(self, correlation_id: str, *, timeout: float = 30.0) -> SagaTrace:
        """Return the tracker's trace of the saga once it is Completed or Failed.

        Raises :class:`TimeoutError` when it has not ended after ``timeout`` seconds, the
        :class:`~choreo.errors.FatalError` of a worker that stopped, and
        :class:`~choreo.errors.ConfigurationError` without a tracker (``track=False``).
        """
        tracker = self._tracker()
        found: list[SagaTrace] = []

        def ended() -> bool:
            trace = tracker.get(correlation_id)
            if trace is not None and trace.state.is_terminal:
                found.append(trace)
                return True
            return False

        if not self.wait_until(ended, timeout=timeout):
            trace = tracker.get(correlation_id)
            seen = trace.status.value if trace is not None else "not seen by the tracker"
            raise TimeoutError(f"saga {correlation_id!r} did not end in {timeout} s ({seen})")
        return found[-1]

    def wait_until(self, condition: Callable[[], bool], *, timeout: float = 30.0) -> bool:
        """Wait until ``condition()`` is true (checked at each tracker change); False on timeout.

        Raises the :class:`~choreo.errors.FatalError` of a worker that stopped meanwhile.
        """
        tracker = self._tracker()
        deadline = time.monotonic() + timeout
        version = -1
        while not condition():
            self.raise_failure()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            version = tracker.wait_for_change(version, min(left, 0.2))
        return True

    def _tracker(self) -> Tracker:
        if self.tracker is None:
            raise ConfigurationError("this App runs without a tracker: App(..., track=True)")
        return self.tracker

    def raise_failure(self) -> None:
        """Raise a :class:`~choreo.errors.FatalError` if a worker thread ended on an error."""
        with self._lock:
            errors = list(self._errors)
        if errors:
            raise FatalError(f"a worker of the App stopped: {errors[0]}") from errors[0]

    def serve(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set or a worker fails (then raise its error)."""
        while not stop.wait(0.5):
            self.raise_failure()
            if self._threads and not any(t.is_alive() for t in self._threads):
                break
        self.raise_failure()

    # --- stopping --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the timeouts, the workers and the live tracker; the tracker stays readable."""
        if self._stopped:
            return
        self._stopped = True
        if self._timeouts is not None:
            self._timeouts.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(_JOIN_S)
        if self._live is not None:
            self._live.stop()

    def close(self) -> None:
        """Stop (see :meth:`stop`), close publishers, stores and transport, remove a temp dir."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        for publisher in self._publishers.values():
            publisher.close()
        for store in self.stores.values():
            store.close()
        close = getattr(self.transport, "close", None)
        if callable(close):
            close()
        if self._temp_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
