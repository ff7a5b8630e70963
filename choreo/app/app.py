"""The application object: services, schemas and stores wired to a transport in one line.

::

    app = App([booking, rooms], schemas="schemas/")

    with app.in_memory() as running:          # one process, choreo's in-memory bus
        cid = running.start(room_booking, BookingRequested(...))
        trace = running.wait(cid)             # the tracker's view once the saga ended

    app.run(bootstrap="kafka:9092")           # every service's worker on Kafka, until Ctrl-C

:class:`App` builds what a user would otherwise assemble by hand: the serde (the event
classes the services declare, the schemas of ``schemas``), one store per service, one
:class:`~choreo.runtime.Worker` per service with handlers (an
:class:`~choreo.orchestration.OrchestratorRunner` for an orchestrator), a
:class:`~choreo.runtime.Publisher` per service that starts sagas, and a live
:class:`~choreo.tracker.Tracker`. Each piece stays reachable on the :class:`AppRun` it
returns, for the user who wants to take one over.

Stores, and what survives: ``store`` is a URL (``{service}`` in it is replaced by each
service's name: ``"sqlite:///data/{service}.db"``, ``"postgresql://…"``, ``"memory:"``) or
a callable ``store(service_name) -> Store``. The default gives every handler a real
``ctx.db``: a SQLite file per service, in a temporary directory removed when an
:meth:`App.in_memory` run closes (nothing survives it, as nothing on the in-memory bus
does), and ``./<service>.inbox.db`` on Kafka (the default of ``choreo run``: a committed
batch survives SIGKILL and power loss of the process's machine, not the loss of its disk).
The guarantees of each store are those of :mod:`choreo.store`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from choreo.app.parts import StoreFactory, Target, Wiring, member_of
from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError
from choreo.runtime.config import WorkerConfig

if TYPE_CHECKING:
    from choreo.app.running import AppRun
    from choreo.orchestration import Orchestrator
    from choreo.transports.config import KafkaConfig
    from choreo.transports.memory import MemoryBus

__all__ = ["BOOTSTRAP_ENV", "App", "StoreFactory"]

BOOTSTRAP_ENV = "CHOREO_KAFKA_BOOTSTRAP"
"""The environment variable :meth:`App.on_kafka` reads when no bootstrap is given."""

KAFKA_CLIENTS = ("confluent", "kafka-python")


class App:
    """Runs ``services`` together: in-process on the memory bus, or on Kafka (module docs).

    ``schemas`` is the directory of the events' ``.avsc`` files (or give ``registry``, a
    loaded schema registry). ``store`` chooses each service's store (see the module
    docs). ``config`` is the base :class:`~choreo.runtime.WorkerConfig` of every worker
    (its group id becomes ``<topic_prefix><service name>``); ``topic_prefix`` prefixes
    every topic, consumer group and dead-letter topic, so two applications can share a
    cluster. ``sagas`` names sagas no service declares (the tracker's choreography).
    ``track`` runs a live tracker (:attr:`AppRun.tracker`, needed by
    :meth:`AppRun.wait`); ``deadline`` is the seconds a saga may wait for its next event
    before the tracker calls it stuck, and ``timeouts`` makes an overdue saga fail with
    ``choreo.SagaTimedOut`` (so its compensations run). Nothing connects before
    :meth:`in_memory`, :meth:`on_kafka` or :meth:`run`.
    """

    def __init__(
        self,
        services: Iterable[Service | Orchestrator],
        *,
        schemas: str | Path | None = None,
        registry: Any = None,
        store: str | StoreFactory | None = None,
        config: WorkerConfig | None = None,
        topic_prefix: str = "",
        sagas: Iterable[Saga] = (),
        track: bool = True,
        deadline: float | None = None,
        timeouts: bool = False,
    ) -> None:
        members = tuple(member_of(item) for item in services)
        if not members:
            raise ConfigurationError("an App needs at least one service")
        names = [m.service.name for m in members]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"two services of the App share a name: {sorted(names)}")
        if (schemas is None) == (registry is None):
            raise ConfigurationError("give the App its schemas: schemas='schemas/' or registry=")
        if schemas is not None and not Path(schemas).is_dir():
            raise ConfigurationError(f"the schemas directory {str(schemas)!r} does not exist")
        if timeouts and not track:
            raise ConfigurationError("timeouts need the tracker: leave track=True")
        if deadline is not None and deadline <= 0:
            raise ConfigurationError("the deadline must be a positive number of seconds")
        self.wiring = Wiring(
            members=members,
            schemas=Path(schemas) if schemas is not None else None,
            registry=registry,
            store=store,
            config=config,
            topic_prefix=topic_prefix,
            sagas=tuple(sagas),
            track=track,
            deadline=deadline,
            timeouts=timeouts,
        )

    def __repr__(self) -> str:
        wiring = self.wiring
        names = ", ".join(m.service.name for m in wiring.members)
        return f"App([{names}], schemas={str(wiring.schemas)!r}, prefix={wiring.topic_prefix!r})"

    @property
    def services(self) -> list[Service]:
        """Return the application's services, in the order given."""
        return self.wiring.services

    def in_memory(
        self, *, bus: MemoryBus | None = None, data_dir: str | Path | None = None
    ) -> AppRun:
        """Start every service in this process on choreo's in-memory bus; return the run.

        ``bus`` shares a :class:`~choreo.transports.MemoryBus` with other code (a new one
        when None). ``data_dir`` keeps the default SQLite stores there instead of in a
        temporary directory. Nothing survives the process. Use the returned
        :class:`~choreo.app.AppRun` as a context manager, or call its ``close()``.
        """
        target = Target("memory", bus=bus)
        return self._start(target, Path(data_dir) if data_dir is not None else None, temp=True)

    def on_kafka(
        self,
        bootstrap: str | None = None,
        *,
        client: str = "confluent",
        kafka: KafkaConfig | None = None,
        partitions: int = 1,
        data_dir: str | Path | None = None,
        workers: bool = True,
    ) -> AppRun:
        """Start every service's worker in this process against a Kafka cluster; return the run.

        ``bootstrap`` is ``HOST:PORT[,…]`` (default: ``$CHOREO_KAFKA_BOOTSTRAP``);
        ``kafka`` gives the full client settings (security, …; ``bootstrap`` wins when
        both are given). ``client`` is ``confluent`` or ``kafka-python`` (the
        ``choreo[kafka-python]`` extra). Topics that do not exist are created with
        ``partitions`` partitions. The default stores are ``<data_dir or .>/<service>.inbox.db``.
        ``workers=False`` starts no worker: the run only starts sagas (and tracks them),
        e.g. from a web endpoint while the services run elsewhere (``choreo run``).
        """
        if client not in KAFKA_CLIENTS:
            raise ConfigurationError(
                f"unknown Kafka client {client!r}: use confluent or kafka-python"
            )
        if partitions < 1:
            raise ConfigurationError("partitions must be at least 1")
        bootstrap = bootstrap or os.environ.get(BOOTSTRAP_ENV) or None
        if bootstrap is None and kafka is None:
            raise ConfigurationError(
                "on_kafka needs the bootstrap servers: App.on_kafka('host:9092'), "
                f"or set ${BOOTSTRAP_ENV}=host:9092"
            )
        target = Target(
            client, bootstrap=bootstrap, kafka=kafka, partitions=partitions, workers=workers
        )
        return self._start(target, Path(data_dir) if data_dir is not None else Path(), temp=False)

    def run(
        self,
        bootstrap: str | None = None,
        *,
        client: str = "confluent",
        kafka: KafkaConfig | None = None,
        partitions: int = 1,
        data_dir: str | Path | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Run every service on Kafka (see :meth:`on_kafka`) until SIGTERM, SIGINT or ``stop``.

        On a signal each worker finishes the batch in hand, publishes and commits it, and
        the stores close. Signal handlers are installed only when called from the main
        thread. Raises the :class:`~choreo.errors.FatalError` of a worker that stopped on
        its own (refused credentials, a fenced producer).
        """
        stop = stop if stop is not None else threading.Event()
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: FrameType | None) -> None:
                stop.set()

            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            with self.on_kafka(
                bootstrap, client=client, kafka=kafka, partitions=partitions, data_dir=data_dir
            ) as running:
                running.serve(stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, target: Target, data_dir: Path | None, *, temp: bool) -> AppRun:
        """Build and start an :class:`AppRun` (closing what it built when starting fails)."""
        from choreo.app.running import AppRun

        running = AppRun(self.wiring, target, data_dir, temp_dir=temp and data_dir is None)
        try:
            running.launch()
        except BaseException:
            running.close()
            raise
        return running
