"""Run one implementation of the saga once, in this process, and measure it.

``python -m bench.peers.harness --impl raw --sagas 1000 --partitions 1 --bootstrap HOST:PORT
--out result.json`` is what :mod:`bench.run_peers` starts in a fresh subprocess per run, so
the process CPU time and peak memory belong to one implementation alone.

How a run goes, the same for every implementation on Kafka:

1. the implementation starts its four services (one consumer each) in this process;
2. a **collector** (a plain confluent-kafka consumer in its own thread, part of the harness)
   subscribes to ``OrderCompleted`` and ``OrderFailed`` and notes when each saga's terminal
   event arrives, and which one it is;
3. a warm-up of a few sagas goes through every service (consumer groups joined, code paths
   warmed) and must finish before timing starts;
4. the **injector** (a plain confluent-kafka producer, part of the harness) publishes all N
   ``OrderCreated`` start events as fast as it can, the start time of each saga taken just
   before its ``produce``; the records (Avro single-object payload, choreo envelope headers)
   are encoded before the clock starts, so every implementation gets the same bytes;
5. the run ends when the collector has seen N terminal events or the time budget is spent.

Throughput is N / (last terminal event - first start). Latency is per saga, start to
terminal event, so in this throughput mode it includes the time a saga queues behind the
ones injected before it. CPU is this process's CPU time (``time.process_time``: every
thread, the Kafka clients' native threads included, the harness's injector and collector
included; not the broker's) over the timed phase; memory is the process's peak RSS.

DBOS needs no Kafka: its workflows are started by ``submit`` and report their own end
(``RunContext.observe``) when the workflow's last step has returned.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.peers import choreography as ch

logger = logging.getLogger("bench.peers.harness")

IMPLEMENTATIONS: Final[Mapping[str, tuple[str, str]]] = {
    "raw": ("bench.peers.raw_confluent", "create"),
    "choreo-confluent": ("bench.peers.choreo_impl", "create_confluent"),
    "choreo-confluent-short-poll": ("bench.peers.choreo_impl", "create_confluent_short_poll"),
    "choreo-kafka-python": ("bench.peers.choreo_impl", "create_kafka_python"),
    "faststream": ("bench.peers.faststream_impl", "create"),
    "dbos": ("bench.peers.dbos_impl", "create"),
}
"""Implementation name -> (module, factory); the order is the order of a run."""

KAFKA_FREE: Final = frozenset({"dbos"})
SERVICES: Final = tuple(ch.SUBSCRIPTIONS)
DEADLETTER_TOPICS: Final = tuple(f"choreo.deadletter.{s}" for s in SERVICES)
WARMUP_TIMEOUT_S: Final = 120.0
COLLECTOR_BATCH: Final = 1000


# --- the context an implementation runs in -----------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to run: implementation, load, broker, budget."""

    impl: str
    sagas: int
    partitions: int
    bootstrap: str
    budget_s: float = 300.0
    warmup: int = 40
    topic_prefix: str = ""
    profile: str | None = None
    profile_idle: bool = False


class RunContext:
    """What an implementation is given: Kafka settings, topic and group names, the codec."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.bootstrap = spec.bootstrap
        self.partitions = spec.partitions
        self.run_tag = uuid.uuid4().hex[:8]
        self.codec = ch.AvroCodec()
        self.observe: Callable[[str, str], None] = _no_observer

    def topic(self, event_type: str) -> str:
        """Return the topic of ``event_type``: its full name (prefixed only in tests)."""
        return self.spec.topic_prefix + event_type

    def deadletter_topic(self, service: str) -> str:
        """Return choreo's dead-letter topic of ``service`` (prefixed only in tests)."""
        return f"{self.spec.topic_prefix}choreo.deadletter.{service}"

    def group(self, service: str) -> str:
        """Return a consumer group id for ``service`` that is new in every run."""
        return f"peers-{self.spec.impl}-{self.run_tag}-{service}"

    @staticmethod
    def producer_settings() -> dict[str, Any]:
        """Return the producer settings every Kafka peer uses (librdkafka names)."""
        return {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "max.in.flight.requests.per.connection": 5,
        }

    def confluent_producer(self) -> dict[str, Any]:
        """Return a confluent-kafka producer configuration (choreo's transport's settings)."""
        return {
            "bootstrap.servers": self.bootstrap,
            **self.producer_settings(),
            "partitioner": "murmur2_random",
            "delivery.report.only.error": True,
        }

    def confluent_consumer(self, group: str) -> dict[str, Any]:
        """Return a confluent-kafka consumer configuration (choreo's transport's settings)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
        }


def _no_observer(order_id: str, outcome: str) -> None:
    raise RuntimeError("this implementation runs on Kafka; the collector observes it")


class Implementation(Protocol):
    """One peer: starts the four services, stops them, reports their state."""

    name: str
    uses_kafka: bool

    def start(self, ctx: RunContext) -> None:
        """Start the services (returns once they run; warm-up proves they consume)."""
        ...

    def submit(self, order_id: str, datum: dict[str, Any]) -> None:
        """Start one saga without Kafka (implementations with ``uses_kafka = False``)."""
        ...

    def stop(self) -> None:
        """Stop the services and release their clients."""
        ...

    def states(self) -> dict[str, dict[str, str]]:
        """Return each service's state dict (order id -> state)."""
        ...

    def failure(self) -> BaseException | None:
        """Return the error that stopped a service, or None while all run."""
        ...


def load(name: str) -> Implementation:
    """Return a new instance of the implementation called ``name``."""
    module_name, factory = IMPLEMENTATIONS[name]
    module = importlib.import_module(module_name)
    impl: Implementation = getattr(module, factory)()
    return impl


# --- observing sagas ---------------------------------------------------------------------


class Tracker:
    """Start and end times of sagas; wakes a waiter when every expected saga has ended."""

    def __init__(self) -> None:
        self.starts: dict[str, float] = {}
        self.ends: dict[str, tuple[float, str]] = {}
        self.duplicates = 0
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()

    def expect(self, order_ids: Iterable[str]) -> None:
        """Wait for these sagas from now on."""
        with self._lock:
            self._pending = set(order_ids) - set(self.ends)
            if self._pending:
                self._done.clear()
            else:
                self._done.set()

    def end(self, order_id: str, outcome: str) -> None:
        """Note that ``order_id`` ended with ``outcome`` (completed or failed) now."""
        now = time.monotonic()
        with self._lock:
            if order_id in self.ends:
                self.duplicates += 1
                return
            self.ends[order_id] = (now, outcome)
            self._pending.discard(order_id)
            if not self._pending:
                self._done.set()

    def wait(self, timeout: float) -> bool:
        """Return True once every expected saga ended, False after ``timeout`` seconds."""
        return self._done.wait(timeout)


class Collector(threading.Thread):
    """Consumes the terminal events and tells the tracker (the harness's own consumer)."""

    def __init__(self, ctx: RunContext, tracker: Tracker) -> None:
        super().__init__(name="collector", daemon=True)
        self.tracker = tracker
        self.outcomes = {
            ctx.topic(ch.ORDER_COMPLETED): "completed",
            ctx.topic(ch.ORDER_FAILED): "failed",
        }
        self.consumer = Consumer(ctx.confluent_consumer(f"peers-collector-{ctx.run_tag}"))
        self.consumer.subscribe(list(self.outcomes))
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Poll until stopped; note each terminal event's saga and outcome."""
        consumer, outcomes, end = self.consumer, self.outcomes, self.tracker.end
        try:
            while not self.stopping.is_set():
                messages = consumer.consume(COLLECTOR_BATCH, 0)
                if not messages:
                    first = consumer.poll(0.05)
                    if first is None:
                        continue
                    messages = [first, *consumer.consume(COLLECTOR_BATCH - 1, 0)]
                for msg in messages:
                    error = msg.error()
                    if error is not None:
                        _raise_lasting(error)
                        continue
                    end(msg.key().decode(), outcomes[msg.topic()])  # type: ignore[union-attr,index]
        except BaseException as exc:
            self.error = exc
        finally:
            self.consumer.close()

    def stop(self) -> None:
        """Stop polling and close the consumer."""
        self.stopping.set()
        self.join(30)


def _raise_lasting(err: KafkaError) -> None:
    """Raise a consumer error that will not go away; ignore transient ones."""
    if err.fatal() or (not err.retriable() and err.code() != KafkaError._PARTITION_EOF):
        if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            return
        raise KafkaException(err)


class Injector:
    """Publishes start events with a plain confluent-kafka producer (the harness's own)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.topic = ctx.topic(ch.ORDER_CREATED)
        self.producer = Producer(ctx.confluent_producer())

    def prepare(self, order_ids: list[str], first_index: int = 0) -> list[tuple[str, bytes, Any]]:
        """Return (order id, payload, headers) of each start event, encoded ahead of time."""
        codec = self.ctx.codec
        now = _now_ms()
        prepared = []
        for index, order_id in enumerate(order_ids, start=first_index):
            payload = codec.encode(ch.ORDER_CREATED, ch.order_created(order_id, index, now))
            headers = [
                (ch.H_TYPE, ch.ORDER_CREATED.encode()),
                (ch.H_ID, str(uuid.uuid4()).encode()),
                (ch.H_CID, order_id.encode()),
                (ch.H_SAGA, ch.SAGA.encode()),
                (ch.H_ROLE, b"start"),
                (ch.H_SERVICE, b"order"),
                (ch.H_AT, str(now).encode()),
                (ch.H_STEP, b"order.start"),
            ]
            prepared.append((order_id, payload, headers))
        return prepared

    def publish(self, prepared: list[tuple[str, bytes, Any]], starts: dict[str, float]) -> None:
        """Produce every prepared start event, noting each saga's start time, then flush."""
        produce, poll, topic = self.producer.produce, self.producer.poll, self.topic
        monotonic = time.monotonic
        for count, (order_id, payload, headers) in enumerate(prepared, start=1):
            starts[order_id] = monotonic()
            while True:
                try:
                    produce(topic, payload, order_id.encode(), headers=headers)
                    break
                except BufferError:
                    poll(0.01)
            if count % 1000 == 0:
                poll(0)
        remaining = self.producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} start events not delivered")


# --- topics --------------------------------------------------------------------------------


def saga_topics(prefix: str = "") -> list[str]:
    """Return every topic a run uses: one per event type, plus choreo's dead-letter topics."""
    return [prefix + t for t in (*ch.EVENT_TYPES, *DEADLETTER_TOPICS)]


def recreate_topics(
    bootstrap: str, topics: list[str], partitions: int, timeout: float = 90.0
) -> None:
    """Delete ``topics`` if they exist and create them empty with ``partitions`` partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    _delete_and_wait(admin, topics, deadline)
    missing = list(topics)
    while missing:
        missing = _create(admin, missing, partitions)
        if missing:  # their deletion was still being finished: delete and try again
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot recreate {missing}")
            time.sleep(0.5)
            _delete_and_wait(admin, missing, deadline)
    _wait_for_leaders(admin, topics, partitions, deadline)


def _delete_and_wait(admin: AdminClient, topics: list[str], deadline: float) -> None:
    """Delete those of ``topics`` that exist and wait until the metadata no longer lists them."""
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [t for t in topics if t in existing]
    if doomed:
        for topic, future in admin.delete_topics(doomed, operation_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise RuntimeError(f"cannot delete {topic}: {exc}") from exc
    while doomed:
        existing = set(admin.list_topics(timeout=30).topics)
        doomed = [t for t in doomed if t in existing]
        if doomed and time.monotonic() > deadline:
            raise RuntimeError(f"topics still exist after deletion: {doomed}")
        if doomed:
            time.sleep(0.2)


def _create(admin: AdminClient, topics: list[str], partitions: int) -> list[str]:
    """Create ``topics``; return those that still existed (a deletion not yet finished)."""
    futures = admin.create_topics(
        [NewTopic(t, partitions, 1) for t in topics], operation_timeout=30
    )
    again = []
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create {topic}: {exc}") from exc
            again.append(topic)
    return again


def _wait_for_leaders(
    admin: AdminClient, topics: list[str], partitions: int, deadline: float
) -> None:
    """Wait until every partition of ``topics`` has a leader."""
    while True:
        metadata = admin.list_topics(timeout=30).topics
        ready = all(
            t in metadata
            and metadata[t].error is None
            and len(metadata[t].partitions) == partitions
            and all(p.leader >= 0 for p in metadata[t].partitions.values())
            for t in topics
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("topics have no leaders yet")
        time.sleep(0.2)


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete ``topics`` (best effort; used by the tests to clean up)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            future.result()


# --- one run ---------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Return the nearest-rank ``pct`` percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class PySpy:
    """Samples this process with py-spy (every thread, raw collapsed stacks) while active."""

    def __init__(self, out: str, *, idle: bool = False, rate: int = 250) -> None:
        self.out = out
        self.idle = idle
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.process = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(os.getpid()),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--nonblocking",
                "--threads",
                *(["--idle"] if self.idle else []),
                "-o",
                self.out,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` in this process and return its measurements (see the module docs)."""
    ctx = RunContext(spec)
    impl = load(spec.impl)
    tracker = Tracker()
    collector: Collector | None = None
    injector: Injector | None = None
    if impl.uses_kafka:
        collector = Collector(ctx, tracker)
        collector.start()
        injector = Injector(ctx)
    else:
        ctx.observe = tracker.end
    started = time.monotonic()
    impl.start(ctx)
    result: dict[str, Any] = {"impl": spec.impl, "sagas": spec.sagas, "partitions": spec.partitions}
    order_ids: list[str] = []
    try:
        warm_ids = [f"warmup-{i:04d}" for i in range(spec.warmup)]
        _drive(impl, injector, tracker, warm_ids, first_index=0)
        if not _wait(tracker, impl, collector, time.monotonic() + WARMUP_TIMEOUT_S):
            raise RuntimeError(
                f"warm-up: {len(tracker.ends)}/{len(warm_ids)} sagas ended in {WARMUP_TIMEOUT_S} s"
            )
        result["startup_s"] = round(time.monotonic() - started, 2)
        order_ids = [f"order-{i:06d}" for i in range(spec.sagas)]
        prepared = injector.prepare(order_ids, spec.warmup) if injector is not None else None
        datums = (
            None
            if injector is not None
            else [ch.order_created(o, i, _now_ms()) for i, o in enumerate(order_ids)]
        )
        tracker.expect(order_ids)
        gc.collect()
        profiler = (
            PySpy(spec.profile, idle=spec.profile_idle)
            if spec.profile
            else contextlib.nullcontext()
        )
        with profiler:
            cpu0, wall0 = time.process_time(), time.monotonic()
            if injector is not None and prepared is not None:
                injector.publish(prepared, tracker.starts)
            else:
                assert datums is not None
                deadline = wall0 + spec.budget_s
                for order_id, datum in zip(order_ids, datums, strict=True):
                    now = time.monotonic()
                    if now > deadline:
                        break
                    tracker.starts[order_id] = now
                    impl.submit(order_id, datum)
            injected = time.monotonic() - wall0
            finished = _wait(tracker, impl, collector, wall0 + spec.budget_s)
            cpu1, wall1 = time.process_time(), time.monotonic()
        result.update(
            _measure(
                spec,
                tracker=tracker,
                order_ids=order_ids,
                finished=finished,
                cpu_s=cpu1 - cpu0,
                wall_s=wall1 - wall0,
            )
        )
        result["injection_s"] = round(injected, 3)
    finally:
        impl.stop()
        if collector is not None:
            collector.stop()
            if collector.error is not None:
                result["collector_error"] = repr(collector.error)
    result["state_check"] = _check_states(impl, order_ids)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _wait(
    tracker: Tracker, impl: Implementation, collector: Collector | None, until: float
) -> bool:
    """Wait for the expected sagas until ``until``; raise as soon as a service has failed."""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return tracker.wait(0)
        if tracker.wait(min(left, 0.5)):
            return True
        error = impl.failure() or (collector.error if collector is not None else None)
        if error is not None:
            raise RuntimeError(f"{impl.name} failed: {error!r}") from error


def _drive(
    impl: Implementation,
    injector: Injector | None,
    tracker: Tracker,
    order_ids: list[str],
    first_index: int,
) -> None:
    """Start ``order_ids`` (untimed; the warm-up)."""
    tracker.expect(order_ids)
    if injector is not None:
        injector.publish(injector.prepare(order_ids, first_index), tracker.starts)
        return
    for index, order_id in enumerate(order_ids, start=first_index):
        tracker.starts[order_id] = time.monotonic()
        impl.submit(order_id, ch.order_created(order_id, index, _now_ms()))


def _measure(
    spec: RunSpec,
    *,
    tracker: Tracker,
    order_ids: list[str],
    finished: bool,
    cpu_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """Return throughput, latency percentiles, CPU and correctness of the timed sagas."""
    starts, ends = tracker.starts, tracker.ends
    ended = [o for o in order_ids if o in ends]
    latencies = sorted((ends[o][0] - starts[o]) * 1000.0 for o in ended)
    first = min(starts[o] for o in order_ids if o in starts)
    last = max((ends[o][0] for o in ended), default=first)
    span = max(last - first, 1e-9)
    wrong = 0
    events = 0
    paths: dict[str, int] = {}
    for order_id in ended:
        path = ch.expected_outcome(order_id)
        paths[path] = paths.get(path, 0) + 1
        events += ch.EVENTS_PER_PATH[path]
        if ends[order_id][1] != ("completed" if path == "completed" else "failed"):
            wrong += 1
    return {
        "status": "ok" if finished and not wrong else ("timed out" if not finished else "wrong"),
        "ended": len(ended),
        "duration_s": round(span, 3),
        "sagas_per_s": round(len(ended) / span, 1),
        "events_per_s": round(events / span, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(latencies[-1], 2) if latencies else None,
        },
        "cpu_s": round(cpu_s, 3),
        "cpu_ms_per_saga": round(cpu_s * 1000.0 / max(1, len(ended)), 3),
        "timed_wall_s": round(wall_s, 3),
        "paths": paths,
        "wrong_outcomes": wrong,
        "duplicate_terminal_events": tracker.duplicates,
    }


def _check_states(impl: Implementation, order_ids: list[str]) -> str:
    """Return "ok" when every service's state matches the expected paths, else a diff."""
    try:
        states = impl.states()
    except Exception as exc:  # a broken implementation must still report its timing
        return f"unavailable: {exc!r}"
    wanted = set(order_ids)
    timed = {s: {o: v for o, v in per.items() if o in wanted} for s, per in states.items()}
    got = ch.count_states(timed)
    expected = ch.expected_state_counts(order_ids)
    got = {s: c for s, c in got.items() if c}
    return "ok" if got == expected else f"expected {expected}, got {got}"


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and write its JSON to ``--out`` (or stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--impl", required=True, choices=sorted(IMPLEMENTATIONS))
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the timed phase")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--topic-prefix", default="", help="tests only: isolate topic names")
    parser.add_argument("--recreate-topics", action="store_true", help="recreate topics first")
    parser.add_argument("--profile", default=None, help="write py-spy raw stacks here")
    parser.add_argument(
        "--profile-idle", action="store_true", help="sample waiting threads too (wall time)"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    spec = RunSpec(
        impl=args.impl,
        sagas=args.sagas,
        partitions=args.partitions,
        bootstrap=args.bootstrap,
        budget_s=args.budget,
        warmup=args.warmup,
        topic_prefix=args.topic_prefix,
        profile=args.profile,
        profile_idle=args.profile_idle,
    )
    if args.recreate_topics and args.impl not in KAFKA_FREE:
        recreate_topics(args.bootstrap, saga_topics(args.topic_prefix), args.partitions)
    result = run(spec)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0 if result.get("status") == "ok" and result.get("state_check") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
