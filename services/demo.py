"""The order-fulfilment demo: the five example services, a live tracker and a few hundred orders.

:class:`Demo` runs everything in one process: one :class:`~choreo.runtime.Worker` thread
per service (each with its own :class:`~choreo.runtime.SqliteInbox` file, which also
holds the service's own tables), a :class:`~choreo.tracker.Tracker` fed live from the bus,
and a :class:`~choreo.runtime.Publisher` that places sample orders. On the memory transport
all of it shares one :class:`~choreo.transports.memory.MemoryBus`; on Kafka every topic
and group name gets a per-run prefix (``demo-<id>.``), so runs never see each other.

When every saga has ended (or ``timeout`` passed) :meth:`Demo.run` returns a
:class:`DemoResult`: the tracker's count per saga status and an audit of the services'
own state (:func:`services.audit.audit`). ``choreo demo`` (:mod:`choreo.cli.demo_cmd`)
shows it and serves the trace viewer.

It lives with the example services it runs, not in the library: :mod:`choreo` never
imports the example application except for this ``choreo demo`` command. It needs the
``services`` package importable (``pip install -e .`` from a checkout) and the
``schemas/`` directory beside it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from choreo.errors import ConfigurationError
from choreo.model.events import event_type_of
from choreo.tracker.model import SagaStatus

if TYPE_CHECKING:
    from choreo.choreography.service import Service
    from choreo.orchestration import Orchestrator, OrchestratorRunner
    from choreo.runtime import Publisher, SqliteInbox, Worker, WorkerConfig
    from choreo.runtime.worker import Serde
    from choreo.tracker.live import LiveTracker
    from choreo.tracker.timeouts import TimeoutService
    from choreo.tracker.tracker import Tracker
    from choreo.transports.base import Transport
    from choreo.transports.config import KafkaConfig
    from services.audit import AuditReport
    from services.shop import Shop

__all__ = ["Demo", "DemoOptions", "DemoResult", "Progress", "find_schemas_dir"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, int], None]
"""Called as ``progress(placed, finished, total)`` while the demo runs."""

_TERMINAL = (SagaStatus.COMPLETED, SagaStatus.FAILED)
_NOTIFY_GRACE_S = 15.0
_TROUBLE = (SagaStatus.STUCK, SagaStatus.VIOLATED, SagaStatus.COMPENSATION_FAILED)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo runs: how many orders, which injected failures, on which transport.

    ``transport`` is ``memory`` (the default, no broker) or ``confluent`` /
    ``kafka-python`` with ``bootstrap``. ``data_dir`` keeps the services' SQLite files
    (a temporary directory, removed at close, when None). ``timeout`` bounds the wait for
    every saga to end; ``deadline`` is the seconds a saga may wait for its next event.
    ``silent_rate`` is the share of shipments whose dispatch silently drops the event:
    those sagas end only through the tracker's timeout (``choreo.SagaTimedOut``) after
    ``deadline`` seconds, and compensate.

    ``style`` is ``choreographed`` (the services react to each other's events) or
    ``orchestrated``: an orchestrator (:mod:`services.orchestrated`) commands the same
    services and times its steps out itself after ``deadline`` seconds; the notification
    service still reacts by choreography.
    """

    orders: int = 300
    seed: int = 0
    decline_rate: float = 0.2
    dispatch_failure_rate: float = 0.05
    transport: str = "memory"
    bootstrap: str | None = None
    partitions: int = 3
    timeout: float = 120.0
    deadline: float = 30.0
    silent_rate: float = 0.0
    style: str = "choreographed"
    data_dir: Path | None = None
    schemas_dir: Path | None = None
    kafka_config: KafkaConfig | None = None
    """Client settings (security, ...) for a Kafka transport; ``bootstrap`` wins."""

    def __post_init__(self) -> None:
        """Reject impossible settings before anything starts."""
        if self.orders < 1:
            raise ConfigurationError("the demo needs at least one order")
        if self.transport == "memory" and self.bootstrap:
            raise ConfigurationError("--bootstrap needs a Kafka transport, not memory")
        if self.transport != "memory" and not self.bootstrap:
            raise ConfigurationError(f"the {self.transport} transport needs --bootstrap")
        if self.style not in ("choreographed", "orchestrated"):
            raise ConfigurationError(f"unknown style {self.style!r}")
        if self.partitions < 1 or self.timeout <= 0 or self.deadline <= 0:
            raise ConfigurationError("partitions, timeout and deadline must be positive")
        if self.silent_rate > 0 and self.timeout <= self.deadline:
            raise ConfigurationError(
                "with silent dispatches the timeout must exceed the deadline, or the "
                "timed-out sagas cannot end in time"
            )


@dataclass(frozen=True, slots=True)
class DemoResult:
    """How a demo run ended: saga counts from the tracker, the state audit and timings."""

    orders: int
    counts: Mapping[SagaStatus, int]
    audit: AuditReport
    seconds: float
    finished: bool
    data_dir: Path
    problems: tuple[str, ...] = field(default=())

    @property
    def ended(self) -> int:
        """Return how many sagas ended Completed or Failed."""
        return sum(self.counts.get(status, 0) for status in _TERMINAL)

    @property
    def sagas_per_second(self) -> float:
        """Return ended sagas per second of wall time (placing orders included)."""
        return self.ended / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every saga ended, none is in trouble, and the state audit is clean."""
        return not self.problems


def find_schemas_dir(given: Path | None = None) -> Path:
    """Return the example's schema directory: ``given``, ``$CHOREO_SCHEMAS_DIR``, or ``schemas/``.

    ``schemas/`` is looked for beside the ``services`` package, then in the working
    directory. Raises :class:`~choreo.errors.ConfigurationError` when none exists.
    """
    candidates: list[Path] = []
    if given is not None:
        candidates.append(given)
    env = os.environ.get("CHOREO_SCHEMAS_DIR")
    if env:
        candidates.append(Path(env))
    import services

    candidates.append(Path(services.__file__).resolve().parent.parent / "schemas")
    candidates.append(Path.cwd() / "schemas")
    for candidate in candidates:
        if (candidate / "shop").is_dir():
            return candidate
    raise ConfigurationError(
        "cannot find the example schemas (a schemas/ directory with shop/ inside); "
        "run from a checkout of choreo or pass --schemas DIR"
    )


class Demo:
    """Runs the example shop and a live tracker in this process (see the module docs).

    Use as a context manager: ``with Demo(options) as demo: result = demo.run()``. The
    tracker stays readable after :meth:`run` (for the web viewer) until :meth:`close`.
    """

    def __init__(self, options: DemoOptions | None = None) -> None:
        self.options = options = options or DemoOptions()
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = "" if options.transport == "memory" else f"demo-{self.run_id}."
        self._temp_dir = options.data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="choreo-demo-"))
            if options.data_dir is None
            else options.data_dir
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[Worker | OrchestratorRunner] = []
        self._inboxes: dict[str, SqliteInbox] = {}
        self._publisher: Publisher | None = None
        self._live: LiveTracker | None = None
        self._timeouts: TimeoutService | None = None
        self._transport: Transport | None = None
        self._shop: Shop | None = None
        self._tracker: Tracker | None = None
        self._started = False
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def tracker(self) -> Tracker:
        """Return the live tracker's :class:`~choreo.tracker.Tracker` (after :meth:`start`)."""
        if self._tracker is None:
            raise ConfigurationError("the demo has not started")
        return self._tracker

    def paths(self) -> dict[str, Path]:
        """Return each service's SQLite file (its inbox, outbox and own tables)."""
        from services.shop import SERVICE_NAMES

        return {name: self.data_dir / f"{name}.sqlite3" for name in SERVICE_NAMES}

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Build the shop, the transport and the tracker; start one worker thread per service."""
        if self._started:
            return
        self._started = True
        from choreo.avro.codec import SingleObjectCodec
        from choreo.avro.loader import load_directory
        from choreo.avro.serde import EventSerde
        from choreo.choreography.graph import Choreography
        from choreo.runtime import Publisher, WorkerConfig
        from choreo.runtime.serdes import event_classes
        from choreo.tracker.fold import TIMEOUT_EVENT_TYPE
        from choreo.tracker.live import LiveTracker
        from choreo.tracker.timeouts import TimeoutService
        from choreo.tracker.tracker import Tracker
        from choreo.transports.factory import open_transport
        from services.config import ServiceConfig
        from services.orchestrated import create as create_orchestrator
        from services.saga import OrderFulfillment, OrderFulfillmentOrchestrated
        from services.shop import build_shop

        options = self.options
        config = ServiceConfig(
            seed=options.seed,
            decline_rate=options.decline_rate,
            dispatch_failure_rate=options.dispatch_failure_rate,
            silent_step="shipping.dispatch" if options.silent_rate > 0 else None,
            silent_rate=options.silent_rate,
        )
        self._shop = shop = build_shop(config)
        orchestrated = options.style == "orchestrated"
        orchestrator = create_orchestrator(deadline=options.deadline) if orchestrated else None
        services = [*shop.services, *([orchestrator.service] if orchestrator else [])]
        codec = SingleObjectCodec(load_directory(find_schemas_dir(options.schemas_dir)))
        serde = EventSerde(codec, event_classes(services))
        if options.transport == "memory":
            self._transport = transport = open_transport("memory")
        else:
            self._transport = transport = open_transport(
                options.transport, bootstrap=options.bootstrap, config=options.kafka_config
            )
        prefix = self.prefix
        base = WorkerConfig(
            poll_timeout=0.2,
            topic_naming=lambda event_type: prefix + event_type,
            deadletter_naming=lambda service: f"{prefix}choreo.deadletter.{service}",
            topic_partitions=1 if options.transport == "memory" else options.partitions,
        )
        if prefix:
            topics = {base.topic_naming(event_type_of(c)) for c in event_classes(services)}
            topics |= {base.deadletter_naming(s.name) for s in services}
            transport.create_topics(sorted(topics), partitions=base.topic_partitions)
        self._tracker = tracker = Tracker(
            choreography=Choreography.from_services(
                services, [OrderFulfillmentOrchestrated if orchestrated else OrderFulfillment]
            ),
            default_deadline_s=options.deadline,
            decode=codec.decode_any,
        )
        self._live = live = LiveTracker(
            tracker,
            transport,
            topics_pattern=f"^{re.escape(prefix)}.*" if prefix else "^.*",
            from_beginning=True,
            group_id=f"{prefix}choreo-demo-tracker-{self.run_id}",
            poll_timeout=0.2,
        )
        live.start()
        if not orchestrated:  # an orchestrator times its own steps out
            self._timeouts = TimeoutService(
                tracker,
                transport,
                codec.encode,
                topic=prefix + TIMEOUT_EVENT_TYPE,
                interval=0.5,
            ).start()
        for service in services:
            self._start_worker(service, orchestrator, transport, serde, base)
        self._publisher = Publisher(
            shop.service("order"), transport, serde, inbox=self._inboxes["order"], config=base
        )

    def _start_worker(
        self,
        service: Service,
        orchestrator: Orchestrator | None,
        transport: Transport,
        serde: Serde,
        base: WorkerConfig,
    ) -> None:
        """Start ``service``'s worker thread (an orchestrator's runner for the orchestrator)."""
        from choreo.orchestration import OrchestratorRunner
        from choreo.runtime import SqliteInbox, Worker

        path = self.paths().get(service.name, self.data_dir / f"{service.name}.sqlite3")
        inbox = self._inboxes[service.name] = SqliteInbox(path)
        config = replace(base, group_id=f"{self.prefix}{service.name}")
        worker: Worker | OrchestratorRunner
        if orchestrator is not None and service is orchestrator.service:
            worker = OrchestratorRunner(orchestrator, transport, serde, config=config, inbox=inbox)
        else:
            worker = Worker(service, transport, serde, config=config, inbox=inbox)
        self._workers.append(worker)
        thread = threading.Thread(
            target=worker.run, args=(self._stop,), name=f"demo-{service.name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def run(self, progress: Progress | None = None) -> DemoResult:
        """Place the orders, wait until every saga ended (or the timeout), and return the result."""
        from services.audit import audit
        from services.catalog import sample_orders
        from services.order import place_order

        self.start()
        assert self._publisher is not None and self._shop is not None
        options = self.options
        total = options.orders
        report = progress or (lambda placed, finished, total: None)
        started = time.monotonic()
        orders = sample_orders(total, seed=options.seed)
        with self._publisher.batch():  # one flush for all the orders, not one per order
            for placed, request in enumerate(orders, start=1):
                place_order(
                    self._publisher,
                    self._shop.orders,
                    request,
                    orchestrated=options.style == "orchestrated",
                )
                if placed % 10 == 0 or placed == total:
                    report(placed, self._ended(), total)
        finished = self._wait(total, started + options.timeout, report)
        state = audit(self.paths(), expect_notifications=False)
        if finished:  # the notifications follow the terminal events closely
            grace = min(started + options.timeout, time.monotonic() + _NOTIFY_GRACE_S)
            while True:
                state = audit(self.paths())
                if state.facts.get("notifications", 0) >= total or time.monotonic() > grace:
                    break
                time.sleep(0.1)
        seconds = time.monotonic() - started
        self.stop_workers()
        counts = self.tracker.counts()
        return DemoResult(
            orders=total,
            counts=counts,
            audit=state,
            seconds=seconds,
            finished=finished,
            data_dir=self.data_dir,
            problems=tuple(_problems(total, counts, state, finished)),
        )

    def _ended(self) -> int:
        counts = self.tracker.counts()
        return sum(counts.get(status, 0) for status in _TERMINAL)

    def _wait(self, total: int, deadline: float, report: Progress) -> bool:
        """Wait until ``total`` sagas ended; return False at ``deadline`` or on a dead worker."""
        tracker = self.tracker
        version = -1
        while time.monotonic() < deadline:
            ended = self._ended()
            report(total, ended, total)
            if ended >= total:
                return True
            if any(not thread.is_alive() for thread in self._threads):
                logger.error("a worker thread ended early; giving up")
                return False
            version = tracker.wait_for_change(version, 0.2)
        return False

    def stop_workers(self) -> None:
        """Stop the timeouts, the workers and the live tracker; the tracker keeps what it read."""
        if self._timeouts is not None:
            self._timeouts.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(30.0)
        if self._live is not None:
            self._live.stop()

    def close(self) -> None:
        """Stop everything, close the stores and remove a temporary data directory."""
        if self._closed:
            return
        self._closed = True
        self.stop_workers()
        if self._publisher is not None:
            self._publisher.close()
        for inbox in self._inboxes.values():
            inbox.close()
        if self._shop is not None:
            self._shop.close()
        close = getattr(self._transport, "close", None)
        if callable(close):
            close()
        if self._temp_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _problems(
    total: int, counts: Mapping[SagaStatus, int], state: AuditReport, finished: bool
) -> list[str]:
    """Return why a demo run is not a success, in words (empty when it is)."""
    problems: list[str] = []
    ended = sum(counts.get(status, 0) for status in _TERMINAL)
    if not finished or ended != total:
        problems.append(f"{total - ended} of {total} sagas did not end")
    for status in _TROUBLE:
        if counts.get(status, 0):
            problems.append(f"{counts[status]} saga(s) {status.value}")
    problems.extend(state.problems)
    if state.problem_count > len(state.problems):
        problems.append(f"... {state.problem_count - len(state.problems)} more state problems")
    for status, name in ((SagaStatus.COMPLETED, "completed"), (SagaStatus.FAILED, "failed")):
        if counts.get(status, 0) != state.statuses.get(name, 0):
            problems.append(
                f"the tracker counts {counts.get(status, 0)} {status.value}, "
                f"the order service {state.statuses.get(name, 0)} {name}"
            )
    return problems
