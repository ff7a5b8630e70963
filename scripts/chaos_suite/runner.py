"""Run one scenario from an empty database to its figures.

A fresh topic prefix (6 partitions per topic) and a fresh database per scenario; the five
services with ``replicas`` replicas each; the placer on its thread; the scenario's fault on
the main thread; then: wait until every saga ended (or the settle timeout), stop the fleet
with SIGTERM, read the whole log back, read the databases, run ``choreo verify``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.choreography.graph import Choreography
from choreo.runtime.serdes import event_classes
from choreo.tracker import SagaStatus, Tracker
from choreo.tracker.live import LiveTracker
from choreo.transports.factory import open_transport
from services.catalog import DEFAULT_STOCK, LIMITED_SKU
from services.config import ServiceConfig
from services.saga import OrderFulfillment
from services.shop import build_shop

from . import state as shop_state
from .checks import evaluate
from .diagnose import hanging_facts, stall_facts
from .faults import delete_topics
from .fleet import SERVICES, Fleet, FleetSpec, service_store_url
from .logcheck import read_log, run_verify
from .placer import Placer
from .scenarios import Scenario

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
PARTITIONS = 6
STALL_S = 75.0
NOTIFY_NOTE_S = 15.0
"""Notifications trailing the last saga by more than this get a timeline note."""
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|Traceback)\b")


def wait_for(
    target: Callable[[], int],
    count: Callable[[], int],
    deadline: float,
    sleep: Callable[[float], None],
    stall_s: float = STALL_S,
) -> bool:
    """Wait until ``count() >= target()``; False at ``deadline`` (monotonic) or after
    ``stall_s`` seconds in which ``count()`` did not change."""
    last_count, last_change = count(), time.monotonic()
    while last_count < target():
        if time.monotonic() >= deadline:
            return False
        sleep(min(0.5, stall_s / 4))
        now = count()
        if now != last_count:
            last_count, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Options:
    """How every scenario of a run is played."""

    orders: int
    replicas: int
    workdir: Path
    seed: int
    settle_timeout: float
    store_url: Callable[[str], str] | None
    """Makes a fresh database for a scenario (None: one SQLite file per replica)."""
    log_level: str = "WARNING"
    """The services' log level (``--service-log-level``)."""


def chaos_config(seed: int, orders: int) -> ServiceConfig:
    """Return the services' configuration: declines, failed dispatches and scarce stock."""
    stock = {**DEFAULT_STOCK, "sku-grinder": max(10, orders // 4), LIMITED_SKU: 5}
    return ServiceConfig(seed=seed, decline_rate=0.2, dispatch_failure_rate=0.05, stock=stock)


class ScenarioRun:
    """One scenario: the context its fault runs in, and the checks after it."""

    def __init__(self, scenario: Scenario, options: Options, kafka: Any, run_id: str) -> None:
        self.scenario = scenario
        self.options = options
        self.kafka = kafka
        self.prefix = f"chaos-{run_id}-{scenario.name}."
        self.workdir = options.workdir / scenario.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(f"{options.seed}-{scenario.name}")
        self.config = chaos_config(options.seed, options.orders)
        self.shop = build_shop(self.config)
        self.timeline: list[dict[str, object]] = []
        self.started = time.monotonic()
        self.db_url = options.store_url(scenario.name) if options.store_url else None
        self.source: shop_state.Source = (
            shop_state.PostgresDatabase(self.db_url)
            if self.db_url
            else shop_state.SqliteFiles(self.workdir)
        )
        env = {
            **self.config.to_env(),
            "COLUMNS": "300",  # one log record per line
            # a replica that died for good (or is paused) leaves the group after 10 s, not 45
            "CHOREO_KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "10000",
        }
        self.fleet = Fleet(
            FleetSpec(
                bootstrap=lambda: str(kafka.bootstrap),
                schemas=SCHEMAS,
                workdir=self.workdir,
                prefix=self.prefix,
                env=env,
                store_url=self.db_url,
                exactly_once=scenario.exactly_once,
                cwd=REPO,
                log_level=options.log_level,
            )
        )
        self.placer = Placer(
            total=options.orders,
            chunks=5,
            gap=1.0,
            seed=self.rng.randint(1, 10**6),
            bootstrap=lambda: str(kafka.bootstrap),
            store_args=self._placer_store_args,
            prefix=self.prefix,
            schemas=SCHEMAS,
            workdir=self.workdir,
            env=env,
            cwd=REPO,
        )
        self.tracker = self._new_tracker()
        self.live: LiveTracker | None = None
        self.notify_s = 0.0
        """Seconds the last notification trailed the last saga's end (see :meth:`_settle`)."""

    # --- the scenario's context -------------------------------------------------------

    def note(self, text: str, **figures: object) -> None:
        """Record what the scenario did, and when."""
        self.timeline.append({"at_s": self.fleet.elapsed(), "what": text, **figures})

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` while restarting replicas that crashed."""
        deadline = time.monotonic() + seconds
        while True:
            self.fleet.supervise()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.25, left))

    def ended(self) -> int:
        """Return how many sagas ended (Completed or Failed) so far, per the live tracker."""
        counts = self.tracker.counts()
        return counts[SagaStatus.COMPLETED] + counts[SagaStatus.FAILED]

    def wait_progress(self, share: float, timeout: float = 180.0) -> float:
        """Wait until ``share`` of the orders ended (or ``timeout``); return the share reached."""
        deadline = time.monotonic() + timeout
        target = share * self.options.orders
        while self.ended() < target and time.monotonic() < deadline:
            self.sleep(0.25)
        return self.ended() / max(1, self.options.orders)

    def event_topics(self) -> list[tuple[str, str]]:
        """Return (topic, event type) of every event of the shop."""
        names = [cls.__avro_name__ for cls in event_classes(self.shop.services)]
        return [(f"{self.prefix}{name}", name) for name in names]

    # --- the run ----------------------------------------------------------------------

    def _placer_store_args(self) -> list[str]:
        if self.db_url:
            return ["--store", service_store_url(self.db_url, "order")]
        return ["--inbox", str(self.workdir / "order-0.sqlite3")]

    def _new_tracker(self) -> Tracker:
        return Tracker(
            choreography=Choreography.from_services(self.shop.services, [OrderFulfillment]),
            default_deadline_s=3_600.0,
            decode=SingleObjectCodec(load_directory(SCHEMAS)).decode_any,
            keep_finished=1_000_000,
        )

    def _create_topics(self, transport: Any) -> None:
        topics = [topic for topic, _ in self.event_topics()]
        topics += [f"{self.prefix}choreo.deadletter.{s}" for s in SERVICES]
        transport.create_topics(sorted(topics), partitions=PARTITIONS)

    def run(self) -> dict[str, Any]:
        """Play the scenario and return its figures, timeline and durations."""
        transport: Any = open_transport("confluent", bootstrap=self.kafka.bootstrap)
        durations: dict[str, float] = {}
        try:
            self._create_topics(transport)
            self.live = LiveTracker(
                self.tracker,
                transport,
                topics_pattern=f"^{re.escape(self.prefix)}.*",
                from_beginning=True,
                poll_timeout=0.2,
            ).start()
            for service in SERVICES:
                for _ in range(self.options.replicas):
                    self.fleet.add(service)
            self.placer.start()
            self.scenario.act(self)
            durations["fault_s"] = time.monotonic() - self.started
            while not self.placer.done.is_set():
                self.sleep(0.5)
            self._settle()
            durations["settle_s"] = time.monotonic() - self.started - durations["fault_s"]
            durations["notify_s"] = self.notify_s
        finally:
            self.fleet.stop()
            if self.live is not None:
                self.live.stop()
            close = getattr(transport, "close", None)
            if callable(close):
                close()
        checking = time.monotonic()
        result = self._check()
        durations["checks_s"] = time.monotonic() - checking
        delete_topics(self.kafka.bootstrap, self.prefix)  # keeps the broker light
        durations["placing_s"] = self.placer.seconds
        durations["total_s"] = time.monotonic() - self.started
        result["durations"] = {k: round(v, 1) for k, v in durations.items()}
        return result

    def _settle(self) -> None:
        """Wait until every placed order ended, then until every ended saga was notified.

        One patience for both waits (:func:`wait_for`): until the count is reached, the
        settle timeout, or ``STALL_S`` seconds without progress (longer than a consumer
        session timeout, after which a dead member's partitions have moved). A notification
        that arrives late but arrives is therefore no mismatch, as a saga that ends late is
        not one; a notification service that stalls (nothing new for ``STALL_S``) or loses
        one still leaves sagas "never notified". How long the notifications trailed the
        last saga is recorded (``notify_s``; a timeline note when longer than
        ``NOTIFY_NOTE_S``).
        """
        placed = self.placer.count()
        deadline = time.monotonic() + self.options.settle_timeout
        if not wait_for(lambda: placed, self.ended, deadline, self.sleep):
            self.note("no saga ended for a while: settling stops", ended=self.ended())
            self._diagnose_stall()
        ended = time.monotonic()
        reached = wait_for(
            self.ended,
            lambda: shop_state.notified(self.source),
            ended + self.options.settle_timeout,
            self.sleep,
        )
        self.notify_s = time.monotonic() - ended
        if not reached:
            self.note(
                "notifications stopped short: settling stops",
                notified=shop_state.notified(self.source),
                ended=self.ended(),
            )
        elif self.notify_s > NOTIFY_NOTE_S:
            self.note("late notifications all arrived", after_s=round(self.notify_s, 1))
        self.sleep(1.0)

    def _diagnose_stall(self) -> None:
        """Note each group's members and the partitions it is behind on (see diagnose.py)."""
        groups = [f"{self.prefix}{service}" for service in SERVICES]
        try:
            facts = stall_facts(str(self.kafka.bootstrap), groups)
        except Exception as error:  # a diagnosis never fails the run
            facts = {"error": str(error)[:300]}
        hanging = hanging_facts(str(self.kafka.bootstrap), [], None)["left"]
        self.note(
            "stall: committed/last stable/high watermark offsets",
            groups=facts,
            hanging=hanging,
        )

    def _check(self) -> dict[str, Any]:
        placed = list(self.placer.placed)
        front_end = frozenset({f"{self.prefix}{OrderFulfillment.start.__avro_name__}"})
        facts = read_log(
            self.kafka.bootstrap, self.prefix, self._new_tracker(), placed, front_end=front_end
        )
        figures = evaluate(placed, facts.sagas, shop_state.load(self.source))
        verify = run_verify(self.kafka.bootstrap, self.prefix, SCHEMAS, REPO)
        eos = self.scenario.exactly_once
        details: dict[str, Any] = dict(figures.details)
        if facts.duplicate_examples:  # at-least-once: redeliveries, expected and no figure
            details["duplicate_records" if eos else "redelivered_records"] = (
                facts.duplicate_examples
            )
        if facts.front_end_examples:  # the placer's start events: at-least-once in both modes
            details["front_end_redelivered"] = facts.front_end_examples
        if verify.findings:
            details["verify"] = [verify.tail]
        if eos:  # what a restarted broker left hanging, and who ended it
            details["hanging"] = hanging_facts(
                str(self.kafka.bootstrap), self.fleet.logs(), getattr(self.kafka, "log_file", None)
            )
        return {
            "name": self.scenario.name,
            "exactly_once": eos,
            "orders": figures.orders,
            "replicas": self.options.replicas,
            "lost": figures.lost,
            "duplicate_side_effects": figures.duplicate_side_effects,
            "oversold": figures.oversold,
            "not_terminal": figures.not_terminal,
            "verify_findings": verify.findings,
            "tracker_mismatches": figures.tracker_mismatches,
            "duplicate_records": facts.duplicate_records if eos else 0,
            "redelivered_records": (0 if eos else facts.duplicate_records)
            + facts.front_end_duplicates,
            "completed": figures.completed,
            "failed": figures.failed,
            "stock_drift": figures.stock_drift,
            "dead_letters": facts.dead_letters,
            "unexpected_exits": len(self.fleet.exits),
            "placer_retries": self.placer.retries,
            "timeline": self.timeline,
            "exits": [
                {"replica": e.replica, "code": e.code, "at_s": e.at_s, "tail": e.tail[-600:]}
                for e in self.fleet.exits[:10]
            ],
            "log_errors": self._log_errors(),
            "details": details,
        }

    def _log_errors(self, limit: int = 15) -> list[str]:
        """Return the first error records of the replicas' logs, one line each (for the report)."""
        found: list[str] = []
        for path in self.fleet.logs():
            lines = path.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines):
                if not _ERROR_LINE.search(line):
                    continue
                record = [line.strip()]
                for follow in lines[number + 1 : number + 8]:
                    if not follow.startswith(" ") or _ERROR_LINE.search(follow):
                        break
                    record.append(follow.strip())
                found.append(f"{path.name}: {' '.join(record)[:400]}")
                if len(found) >= limit:
                    return found
        return found

    def close(self) -> None:
        """Close the shop's own store connections."""
        self.shop.close()
