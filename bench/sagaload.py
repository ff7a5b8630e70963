"""Drive the order saga through services running as separate processes, on a real broker.

Shared by ``bench_broker_cost.py``, ``bench_pingpong.py`` and ``bench_soak.py``:

- :class:`Layout`: the topic layouts compared (one topic per event type, per Avro
  namespace, one shared topic for the saga), each a :data:`~choreo.model.topics.TopicNaming`
  of the library behind a per-run prefix;
- :func:`create_topics` / :func:`delete_topics`: a run's topics, fresh names every run
  (no waiting for deletions);
- :class:`Services`: one ``python -m bench.saga_service`` process per service, stopped by
  its own PID (SIGTERM);
- :class:`Injector` (start events at a fixed rate or one at a time, encoded before the
  clock, from a plain confluent-kafka producer with fixed settings, the same in every
  variant) and :class:`Collector` (the terminal events, from a plain consumer, noting the
  time each saga ended).

Latency of a saga = its terminal event consumed by the collector - its start event's
``produce`` call, both on this process's monotonic clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.peers import choreography as ch
from choreo.model.topics import TopicNaming, shared_topic, topic_for, topic_per_namespace

ROOT: Final = Path(__file__).resolve().parents[1]
SERVICES: Final = ("inventory", "payment", "shipping", "order")
LAYOUTS: Final[Mapping[str, TopicNaming]] = {
    "event-type": topic_for,
    "namespace": topic_per_namespace,
    "saga": shared_topic(ch.SAGA),
}
"""The topic layouts: library naming functions, by name."""

INJECTOR_SETTINGS: Final[Mapping[str, Any]] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 0,
    "partitioner": "murmur2_random",
    "delivery.report.only.error": True,
}
"""The harness's producer (the same in every variant and implementation)."""


@dataclass(frozen=True)
class Layout:
    """A run's topic names: ``prefix`` + the layout's topic of each event type."""

    name: str
    prefix: str

    def topic(self, event_type: str) -> str:
        """Return the topic of ``event_type``."""
        return self.prefix + LAYOUTS[self.name](event_type)

    def deadletter_topic(self, service: str) -> str:
        """Return the dead-letter topic of ``service``."""
        return f"{self.prefix}choreo.deadletter.{service}"

    def topics(self) -> list[str]:
        """Return every topic of the run (event topics and dead-letter topics)."""
        names = {self.topic(t) for t in ch.EVENT_TYPES}
        names.update(self.deadletter_topic(s) for s in SERVICES)
        return sorted(names)


def new_layout(name: str) -> Layout:
    """Return layout ``name`` under a prefix that is new in every run."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}: one of {', '.join(LAYOUTS)}")
    return Layout(name, f"bc{uuid.uuid4().hex[:8]}.")


def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create ``topics`` with ``partitions`` partitions and wait until each has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 60
    while True:
        metadata = admin.list_topics(timeout=30).topics
        if all(
            t in metadata
            and len(metadata[t].partitions) == partitions
            and all(p.leader >= 0 for p in metadata[t].partitions.values())
            for t in topics
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("topics have no leaders yet")
        time.sleep(0.1)


def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Delete ``topics`` (best effort, without waiting for the deletion to finish)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(topics), operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            future.result(30)


def rss_mb(pid: int) -> float:
    """Return the resident set size of process ``pid`` in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Services:
    """Service processes (``python -m <module>``), each stopped by its own PID."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.state_files: dict[str, Path] = {}
        self.stats_files: list[Path] = []

    def start(self, name: str, args: Sequence[str], *, module: str = "bench.saga_service",
              state_file: Path | None = None, stats_file: Path | None = None) -> None:
        """Start one service process with ``args``."""
        extra = ["--states-out", str(state_file)] if state_file is not None else []
        if stats_file is not None:
            extra += ["--stats-out", str(stats_file)]
            self.stats_files.append(stats_file)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module, *args, *extra], cwd=ROOT, env=env
        )
        if state_file is not None:
            self.state_files[name] = state_file

    def pids(self) -> dict[str, int]:
        """Return the PID of each running service."""
        return {name: proc.pid for name, proc in self.procs.items()}

    def check_alive(self) -> None:
        """Raise when a service process has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"service {name} exited with {proc.returncode}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every process, wait, SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()

    def states(self) -> dict[str, dict[str, int]]:
        """Return the state counts each stopped service wrote."""
        found: dict[str, dict[str, int]] = {}
        for _name, path in self.state_files.items():
            if path.exists():
                found.update(json.loads(path.read_text()))
        return found


def start_headers(order_id: str, now_ms: int) -> list[tuple[str, bytes]]:
    """Return the choreo envelope headers of an OrderCreated start event."""
    return [
        (ch.H_TYPE, ch.ORDER_CREATED.encode()),
        (ch.H_ID, str(uuid.uuid4()).encode()),
        (ch.H_CID, order_id.encode()),
        (ch.H_SAGA, ch.SAGA.encode()),
        (ch.H_ROLE, b"start"),
        (ch.H_SERVICE, b"order"),
        (ch.H_AT, str(now_ms).encode()),
        (ch.H_STEP, b"order.start"),
    ]


class Injector:
    """Publishes OrderCreated start events (encoded ahead of the clock)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, **INJECTOR_SETTINGS})
        self.codec = ch.AvroCodec()

    def prepare(self, order_ids: Sequence[str]) -> list[tuple[str, bytes, list[Any]]]:
        """Return (order id, payload, headers) of each start event."""
        now = time.time_ns() // 1_000_000
        return [
            (oid, self.codec.encode(ch.ORDER_CREATED, ch.order_created(oid, i, now)),
             start_headers(oid, now))
            for i, oid in enumerate(order_ids)
        ]

    def send(self, order_id: str, payload: bytes, headers: list[Any]) -> float:
        """Produce one start event now (the producer sends at once); return when."""
        started = time.monotonic()
        self.producer.produce(self.topic, payload, order_id.encode(), headers=headers)
        self.producer.poll(0)
        return started

    def paced(self, prepared: Sequence[tuple[str, bytes, list[Any]]], rate: float,
              starts: dict[str, float], alive: Callable[[], None] | None = None) -> None:
        """Produce the events at ``rate`` per second on a fixed schedule, noting start times."""
        begin = time.monotonic()
        for index, (order_id, payload, headers) in enumerate(prepared):
            due = begin + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if alive is not None and index % 500 == 0:
                alive()
            starts[order_id] = self.send(order_id, payload, headers)
        self.flush()

    def flush(self) -> None:
        """Wait until every start event is acknowledged."""
        if self.producer.flush(60):
            raise RuntimeError("start events not delivered")


class Collector(threading.Thread):
    """Consumes the terminal events; notes each saga's end time and terminal type."""

    def __init__(self, bootstrap: str, topics: Iterable[str],
                 types: Iterable[str] = ch.TERMINAL) -> None:
        super().__init__(name="collector", daemon=True)
        self.types = {t.encode(): t for t in types}
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"collector-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        })
        self.topics = sorted(set(topics))
        self.ends: dict[str, float] = {}
        self.outcomes: dict[str, str] = {}
        self.duplicates = 0
        self.assigned = threading.Event()
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Poll until stopped."""
        consumer = self.consumer
        consumer.subscribe(self.topics, on_assign=lambda c, p: self.assigned.set())
        try:
            while not self.stopping.is_set():
                msg = consumer.poll(0.05)
                if msg is None:
                    continue
                batch = [msg, *consumer.consume(499, 0)]
                now = time.monotonic()
                for m in batch:
                    self._note(m, now)
        except BaseException as exc:
            self.error = exc
        finally:
            consumer.close()

    def _note(self, msg: Any, now: float) -> None:
        error = msg.error()
        if error is not None:
            if error.fatal() or error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise KafkaException(error)
            return
        event_type = next((v for k, v in msg.headers() or () if k == ch.H_TYPE), None)
        name = self.types.get(event_type) if event_type is not None else None
        if name is None:
            return
        order_id = msg.key().decode()
        with self.changed:
            if order_id in self.ends:
                self.duplicates += 1
            else:
                self.ends[order_id] = now
                self.outcomes[order_id] = name
            self.changed.notify_all()

    def wait_for(self, order_ids: Iterable[str], timeout: float) -> bool:
        """Wait until every saga in ``order_ids`` ended; False after ``timeout`` seconds."""
        wanted = list(order_ids)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if all(o in self.ends for o in wanted):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    return False
                self.changed.wait(min(left, 0.5))

    def stop(self) -> None:
        """Stop polling and close the consumer."""
        self.stopping.set()
        self.join(30)


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the nearest-rank ``pct`` percentile of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def latencies_ms(starts: Mapping[str, float], ends: Mapping[str, float]) -> list[float]:
    """Return the latency in ms of each saga of ``starts`` that ended."""
    return [(ends[o] - s) * 1000 for o, s in starts.items() if o in ends]


def check_outcomes(order_ids: Iterable[str], outcomes: Mapping[str, str]) -> list[str]:
    """Return the sagas whose terminal event is not the one their id decides."""
    wrong = []
    for order_id in order_ids:
        expected = ch.ORDER_COMPLETED if ch.expected_outcome(order_id) == "completed" \
            else ch.ORDER_FAILED
        if outcomes.get(order_id) != expected:
            wrong.append(order_id)
    return wrong


def spread(values: Sequence[float]) -> dict[str, float]:
    """Return min, median and max of ``values``."""
    ordered = sorted(values)
    return {"min": ordered[0], "median": percentile(ordered, 50), "max": ordered[-1]}


def machine() -> dict[str, Any]:
    """Return the machine and versions a result was measured with."""
    import platform

    import confluent_kafka

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "load_average_at_start": os.getloadavg(),
    }


def kafka_broker_module() -> Any:
    """Return ``scripts/kafka_broker.py`` loaded as the module ``kafka_broker``."""
    import importlib.util

    if "kafka_broker" in sys.modules:
        return sys.modules["kafka_broker"]
    path = ROOT / "scripts" / "kafka_broker.py"
    spec = importlib.util.spec_from_file_location("kafka_broker", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_broker"] = module
    spec.loader.exec_module(module)
    return module


class BrokerOption:
    """The broker a bench uses: a fresh one from ``scripts/kafka_broker.py``, or a given one."""

    def __init__(self, bootstrap: str | None, pid: int | None) -> None:
        self._module = kafka_broker_module()
        self._broker: Any = None
        if bootstrap is None:
            self._broker = self._module.KafkaBroker(port=0).start()
            bootstrap, pid = self._broker.bootstrap, self._broker.pid
        if pid is None:
            raise SystemExit("--bootstrap needs --broker-pid (its CPU is read from /proc)")
        self.bootstrap: str = bootstrap
        self.pid: int = pid
        self.kafka_version: str = self._module.KAFKA_VERSION

    def stop(self) -> None:
        """Stop the broker if this process started it."""
        if self._broker is not None:
            self._broker.stop()
