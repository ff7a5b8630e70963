"""The order-fulfilment demo: the five example services, a live tracker and a few hundred orders.

:class:`Demo` runs the shop as one :class:`choreo.App`, in this process: a worker thread
per service (each on its own SQLite file, which also holds the service's own tables), a
live :class:`~choreo.tracker.Tracker` and the thread that fails overdue sagas, and the
order service's :class:`~choreo.runtime.Publisher` placing sample orders. On the memory
transport everything shares one in-memory bus; on Kafka every topic and group name gets a
per-run prefix (``demo-<id>.``), so runs never see each other.

When every saga has ended (or ``timeout`` passed) :meth:`Demo.run` returns a
:class:`DemoResult`: the tracker's count per saga status and an audit of the services'
own state (:func:`services.audit.audit`). ``choreo demo`` (:mod:`choreo.cli.demo_cmd`)
shows it and serves the trace viewer.

It lives with the example services it runs, not in the library: :mod:`choreo` never
imports the example application except for this ``choreo demo`` command, which finds it
in a checkout or in the copy the wheel carries (:mod:`choreo.cli.example`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from choreo.errors import ConfigurationError, FatalError
from choreo.tracker.model import SagaStatus

if TYPE_CHECKING:
    from choreo.app import AppRun
    from choreo.runtime import Publisher
    from choreo.tracker.tracker import Tracker
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
        self._app: AppRun | None = None
        self._publisher: Publisher | None = None
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
        """Build the shop and start it as a :class:`choreo.App` (workers, tracker, timeouts)."""
        if self._started:
            return
        self._started = True
        from choreo.app import App
        from choreo.runtime import WorkerConfig
        from choreo.store import SqliteStore
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
        paths = self.paths()
        app = App(
            [*shop.services, *([orchestrator] if orchestrator else [])],
            schemas=find_schemas_dir(options.schemas_dir),
            store=lambda name: SqliteStore(paths.get(name, self.data_dir / f"{name}.sqlite3")),
            config=WorkerConfig(poll_timeout=0.2),
            topic_prefix=self.prefix,
            sagas=[OrderFulfillmentOrchestrated if orchestrated else OrderFulfillment],
            deadline=options.deadline,
            timeouts=not orchestrated,  # an orchestrator times its own steps out
        )
        if options.transport == "memory":
            self._app = running = app.in_memory(data_dir=self.data_dir)
        else:
            self._app = running = app.on_kafka(
                options.bootstrap,
                client=options.transport,
                kafka=options.kafka_config,
                partitions=options.partitions,
                data_dir=self.data_dir,
            )
        self._tracker = running.tracker
        self._publisher = running.publisher("order")

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
        assert self._app is not None

        def ended() -> bool:
            count = self._ended()
            report(total, count, total)
            return count >= total

        try:
            return self._app.wait_until(ended, timeout=max(0.0, deadline - time.monotonic()))
        except FatalError:
            logger.exception("a worker ended early; giving up")
            return False

    def stop_workers(self) -> None:
        """Stop the timeouts, the workers and the live tracker; the tracker keeps what it read."""
        if self._app is not None:
            self._app.stop()

    def close(self) -> None:
        """Stop everything, close the stores and remove a temporary data directory."""
        if self._closed:
            return
        self._closed = True
        if self._app is not None:
            self._app.close()
        if self._shop is not None:
            self._shop.close()
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
