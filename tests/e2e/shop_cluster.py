"""The example shop on a real broker: each service in its own ``choreo run`` process.

:class:`ShopCluster` starts the five services as subprocesses (confluent transport, one
SQLite inbox file per service, every topic and group under a per-run prefix), follows the
run with an in-process live tracker, places orders through the order service's outbox and
can SIGKILL and restart a service. The services' files are what :func:`services.audit.audit`
reads afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.avro.serde import EventSerde
from choreo.choreography.graph import Choreography
from choreo.runtime import Publisher, SqliteInbox, WorkerConfig
from choreo.runtime.serdes import event_classes
from choreo.tracker import SagaStatus, Tracker
from choreo.tracker.live import LiveTracker
from choreo.transports.factory import open_transport
from services.audit import AuditReport, audit
from services.catalog import sample_orders
from services.config import ServiceConfig
from services.order import place_order
from services.saga import OrderFulfillment
from services.shop import SERVICE_NAMES, build_shop

from .shop_diagnosis import diagnose_missing

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
TERMINAL = (SagaStatus.COMPLETED, SagaStatus.FAILED)
PARTITIONS = 3


def console_script() -> str:
    """Return the installed ``choreo`` script."""
    beside_python = Path(sys.executable).with_name("choreo")
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("choreo")
    if found is None:
        raise RuntimeError("the 'choreo' console script is not installed (pip install -e .)")
    return found


class ShopCluster:
    """Five service processes, a live tracker and an order publisher for one test run."""

    def __init__(self, bootstrap: str, workdir: Path, config: ServiceConfig) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.config = config
        self.run_id = uuid.uuid4().hex[:10]
        self.prefix = f"e2e-{self.run_id}."
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}
        self.starts: dict[str, int] = dict.fromkeys(SERVICE_NAMES, 0)
        self.shop = build_shop(config)
        self.codec = SingleObjectCodec(load_directory(SCHEMAS))
        self.serde = EventSerde(self.codec, event_classes(self.shop.services))
        self.transport = open_transport("confluent", bootstrap=bootstrap)
        self.worker_config = WorkerConfig(
            topic_naming=self.topic,
            deadletter_naming=lambda service: f"{self.prefix}choreo.deadletter.{service}",
        )
        self.tracker = Tracker(
            choreography=Choreography.from_services(self.shop.services, [OrderFulfillment]),
            default_deadline_s=120.0,
            decode=self.codec.decode_any,
        )
        self.live: LiveTracker | None = None
        self.started: list[str] = []  # correlation ids of the sagas placed so far
        self.order_inbox: SqliteInbox | None = None
        self.publisher: Publisher | None = None

    # --- names and files ---------------------------------------------------------------

    def topic(self, event_type: str) -> str:
        """Return this run's topic of ``event_type``."""
        return f"{self.prefix}{event_type}"

    def path(self, service: str) -> Path:
        """Return ``service``'s SQLite file (inbox, outbox and own tables)."""
        return self.workdir / f"{service}.sqlite3"

    def paths(self) -> dict[str, Path]:
        """Return every service's SQLite file."""
        return {name: self.path(name) for name in SERVICE_NAMES}

    # --- processes ---------------------------------------------------------------------

    def command(self, service: str) -> list[str]:
        """Return the ``choreo run`` command line of ``service``."""
        return [
            console_script(),
            "run",
            f"services.{service}:service",
            "--transport",
            "confluent",
            "--bootstrap",
            self.bootstrap,
            "--schemas",
            str(SCHEMAS),
            "--inbox",
            str(self.path(service)),
            "--group",
            f"{self.prefix}{service}",
            "--topic-prefix",
            self.prefix,
            # a stable id per replica (static membership): a restarted worker gets its
            # partitions back at once instead of after the dead member's session timeout
            "--instance-id",
            f"{service}-0",
        ]

    def start_service(self, service: str) -> None:
        """Start ``service``'s process (its output goes to a log file in the work dir)."""
        env = {**os.environ, **self.config.to_env(), "PYTHONUNBUFFERED": "1"}
        self.starts[service] += 1
        log = (self.workdir / f"{service}.{self.starts[service]}.log").open("wb")
        self.logs[f"{service}.{self.starts[service]}"] = log
        self.processes[service] = subprocess.Popen(
            self.command(service), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
        )

    def kill(self, service: str) -> None:
        """SIGKILL ``service``'s process and reap it."""
        process = self.processes[service]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def check_alive(self) -> None:
        """Raise naming the log when a service process died on its own."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                log = self.workdir / f"{name}.{self.starts[name]}.log"
                raise AssertionError(
                    f"service {name} exited with {code}:\n{log.read_text(errors='replace')[-3000:]}"
                )

    def log_text(self) -> str:
        """Return the tail of every service's log (for failure messages)."""
        parts = []
        for log in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    # --- run -----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the topics, start the tracker, the five services and the order publisher."""
        topics = {
            self.topic(t) for t in (c.__avro_name__ for c in event_classes(self.shop.services))
        }
        topics |= {f"{self.prefix}choreo.deadletter.{s}" for s in SERVICE_NAMES}
        self.transport.create_topics(sorted(topics), partitions=PARTITIONS)
        self.live = LiveTracker(
            self.tracker,
            self.transport,
            topics_pattern=f"^{re.escape(self.prefix)}.*",
            from_beginning=True,
            poll_timeout=0.2,
        ).start()
        for service in SERVICE_NAMES:
            self.start_service(service)
        self.order_inbox = SqliteInbox(self.path("order"))
        self.publisher = Publisher(
            self.shop.service("order"),
            self.transport,
            self.serde,
            inbox=self.order_inbox,
            config=self.worker_config,
        )

    def place(self, count: int, *, seed: int, on_each: Callable[[int], None] | None = None) -> None:
        """Place ``count`` sample orders (``on_each(n)`` is called after the n-th)."""
        assert self.publisher is not None
        with self.publisher.batch():  # one flush for all the orders, not one per order
            for number, request in enumerate(sample_orders(count, seed=seed), start=1):
                self.started.append(place_order(self.publisher, self.shop.orders, request))
                if on_each is not None:
                    on_each(number)

    def ended(self) -> int:
        """Return how many sagas the tracker saw end."""
        counts = self.tracker.counts()
        return sum(counts[status] for status in TERMINAL)

    def wait_until_ended(self, count: int, timeout: float) -> None:
        """Wait until ``count`` sagas ended and their notifications were recorded."""
        deadline = time.monotonic() + timeout
        version = -1
        while self.ended() < count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {self.ended()} of {count} sagas ended: {self.tracker.counts()}\n"
                    + self.diagnosis()
                    + "\n"
                    + self.log_text()
                )
            version = self.tracker.wait_for_change(version, 0.5)
        while self.audit().facts.get("notifications", 0) < count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError("notifications missing\n" + self.log_text())
            time.sleep(0.2)

    def diagnosis(self) -> str:
        """Return a report on the sagas not ended: never seen ones lost or not read, and where."""
        return diagnose_missing(
            self.tracker,
            self.transport,
            started=self.started,
            prefix=self.prefix,
            order_store=self.path("order"),
            partitions=PARTITIONS,
        )

    def payments(self) -> int:
        """Return how many orders the payment service has charged or declined so far."""
        path = self.path("payment")
        if not path.exists():
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        try:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payments'"
            ).fetchone()
            return int(conn.execute("SELECT COUNT(*) FROM payments").fetchone()[0]) if exists else 0
        finally:
            conn.close()

    def wait_until_charged(self, count: int, timeout: float) -> None:
        """Wait until the payment service has handled ``count`` orders."""
        deadline = time.monotonic() + timeout
        while self.payments() < count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"payment handled only {self.payments()} orders\n" + self.log_text()
                )
            time.sleep(0.05)

    def audit(self) -> AuditReport:
        """Return the audit of the services' own state."""
        return audit(self.paths())

    def verify(self) -> subprocess.CompletedProcess[str]:
        """Run ``choreo verify`` over this run's topics and return the finished process."""
        return subprocess.run(
            [
                console_script(),
                "verify",
                "--bootstrap",
                self.bootstrap,
                "--topics",
                f"^{re.escape(self.prefix)}.*",
                "--graph",
                "services",
                "--schemas",
                str(SCHEMAS),
                "--idle",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO,
        )

    def close(self) -> None:
        """Stop the services (SIGTERM, then SIGKILL), the tracker and the publisher."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for log in self.logs.values():
            log.close()
        if self.live is not None:
            self.live.stop()
        if self.publisher is not None:
            self.publisher.close()
        if self.order_inbox is not None:
            self.order_inbox.close()
        self.shop.close()
        close: Any = getattr(self.transport, "close", None)
        if callable(close):
            close()
