"""Run one implementation of the saga once, each service in its own process, and measure it.

``python -m bench.peers.harness --impl ceiling --sagas 1000 --partitions 6 --replicas 1
--bootstrap HOST:PORT --broker-pid PID --recreate-topics --out result.json`` is what
:mod:`bench.run_peers` starts in a fresh subprocess per run.

How a run goes, the same for every implementation on Kafka:

1. the topics of the saga are recreated empty with the run's partition count;
2. every service starts in a process of its own (:mod:`bench.peers.service`; with
   ``--replicas N`` N processes per service, in one consumer group), as it would be
   deployed; the run waits until each prints ``ready`` and every consumer group is
   stable with all its members (:func:`bench.peers.topics.wait_for_groups`);
3. the harness's **collector** (a plain confluent-kafka consumer in a thread of this
   process) notes when each saga's terminal event arrives, and which one it is;
4. a warm-up of a few sagas must go through every service before timing starts;
5. the harness's **injector** (a plain confluent-kafka producer in this process)
   publishes all N start events as fast as it can, each saga's start time taken just
   before its ``produce``; the records (Avro single-object payload by choreo's codec,
   choreo envelope headers) are encoded before the clock starts;
6. the run ends when the collector has seen N terminal events or the budget is spent;
   then every service process is told to stop (its stdin is closed) and reports its state
   dict, which is checked against the states the order ids decide.

Throughput is N / (last terminal event - first start); latency is per saga, start to
terminal event (in this throughput mode it includes queueing behind earlier sagas). CPU is
read from /proc over the timed phase (:mod:`bench.proc_cpu`): the **service** CPU is the
sum over the service processes (the headline figure), the **harness** CPU (injector and
collector) is this process's, the **broker** CPU the Kafka JVM's (``--broker-pid``) and the
**PostgreSQL** CPU the server's processes (``--postgres-pid``). The machine's busy cores
over the timed phase (everything on it, other users included) are recorded too.

DBOS needs no Kafka and is one application process (it orchestrates the steps as function
calls): it runs in this process, its workflows are started by ``submit`` and report their
end (``RunContext.observe``) when the workflow's last step has returned; its service CPU
is this process's CPU, the starts included.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import resource
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from bench.peers import choreography as ch
from bench.peers.shape import SagaShape, expected_state_counts, merge_states
from bench.proc_cpu import CpuMeter, machine_cpu_seconds

logger = logging.getLogger("bench.peers.harness")

IMPLEMENTATIONS: Final[Mapping[str, tuple[str, str]]] = {
    "ceiling": ("bench.peers.raw_confluent", "create_ceiling"),
    "raw": ("bench.peers.raw_confluent", "create"),
    "choreo-confluent": ("bench.peers.choreo_impl", "create_confluent"),
    "choreo-kafka-python": ("bench.peers.choreo_impl", "create_kafka_python"),
    "choreo-postgres": ("bench.peers.choreo_impl", "create_postgres"),
    "choreo-orchestrated": ("bench.peers.orchestrated_impl", "create"),
    "faststream": ("bench.peers.faststream_impl", "create"),
    "dbos-postgres": ("bench.peers.dbos_impl", "create_postgres"),
    "dbos-sqlite": ("bench.peers.dbos_impl", "create_sqlite"),
}
"""Implementation name -> (module, factory); the order is the order of a run."""

KAFKA_FREE: Final = frozenset({"dbos-postgres", "dbos-sqlite"})
NEEDS_POSTGRES: Final = frozenset({"choreo-postgres", "dbos-postgres"})
WARMUP_TIMEOUT_S: Final = 120.0
COLLECTOR_BATCH: Final = 1000


# --- the context an implementation runs in -----------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to run: implementation, load, broker, database, budget, replicas."""

    impl: str
    sagas: int
    partitions: int
    bootstrap: str
    budget_s: float = 300.0
    warmup: int = 40
    topic_prefix: str = ""
    replicas: int = 1
    postgres_url: str | None = None
    broker_pid: int | None = None
    postgres_pid: int | None = None
    recreate_topics: bool = False
    run_tag: str | None = None
    replica: int = 0


class RunContext:
    """What an implementation is given: Kafka settings, topic and group names, the database."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.bootstrap = spec.bootstrap
        self.partitions = spec.partitions
        self.postgres_url = spec.postgres_url
        self.replica = spec.replica
        self.run_tag = spec.run_tag or uuid.uuid4().hex[:8]
        self.observe: Callable[[str, str], None] = _no_observer

    @cached_property
    def codec(self) -> ch.AvroCodec:
        """Return the fastavro single-object codec (raw, FastStream)."""
        return ch.AvroCodec()

    def topic(self, event_type: str) -> str:
        """Return the topic of ``event_type``: its full name (prefixed only in tests)."""
        return self.spec.topic_prefix + event_type

    def deadletter_topic(self, service: str) -> str:
        """Return choreo's dead-letter topic of ``service`` (prefixed only in tests)."""
        return f"{self.spec.topic_prefix}choreo.deadletter.{service}"

    def group(self, service: str) -> str:
        """Return the consumer group id of ``service``, new in every run, shared by replicas."""
        return f"peers-{self.spec.impl}-{self.run_tag}-{service}"

    def schema(self, service: str) -> str:
        """Return a PostgreSQL schema name for ``service``'s tables, new in every run."""
        return f"peers_{self.run_tag}_{service}".replace("-", "_").lower()

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
    """One peer: starts one of its services (or, without Kafka, all), stops, reports state."""

    name: str
    uses_kafka: bool
    shape: SagaShape

    def start(self, ctx: RunContext, service: str | None = None) -> None:
        """Start ``service`` in this process (None: every service; Kafka-free peers)."""
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

    def __init__(self, ctx: RunContext, shape: SagaShape) -> None:
        from choreo.avro.codec import SingleObjectCodec
        from choreo.avro.loader import load_directory

        self.shape = shape
        self.codec = SingleObjectCodec(load_directory(ch.REPO_ROOT / "schemas"))
        self.topic = ctx.topic(shape.start_event)
        self.producer = Producer(ctx.confluent_producer())

    def prepare(self, order_ids: list[str], first_index: int = 0) -> list[tuple[str, bytes, Any]]:
        """Return (order id, payload, headers) of each start event, encoded ahead of time."""
        shape, encode = self.shape, self.codec.encode
        now = _now_ms()
        prepared = []
        for index, order_id in enumerate(order_ids, start=first_index):
            payload = encode(shape.start_event, shape.start_datum(order_id, index, now))
            headers = [
                (ch.H_TYPE, shape.start_event.encode()),
                (ch.H_ID, str(uuid.uuid4()).encode()),
                (ch.H_CID, order_id.encode()),
                (ch.H_SAGA, shape.saga.encode()),
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


class Meters:
    """CPU meters of the processes around the services: broker, PostgreSQL, this process."""

    def __init__(self, spec: RunSpec) -> None:
        self.broker = CpuMeter(spec.broker_pid) if spec.broker_pid else None
        self.postgres = CpuMeter(spec.postgres_pid, tree=True) if spec.postgres_pid else None
        self.figures: dict[str, float | None] = {}

    def start(self) -> None:
        """Read every counter now."""
        for meter in (self.broker, self.postgres):
            if meter is not None:
                meter.start()
        self._own, self._machine = time.process_time(), machine_cpu_seconds()

    def stop(self) -> None:
        """Note the CPU seconds each spent since :meth:`start`."""
        self.figures = {
            "harness": time.process_time() - self._own,
            "machine": machine_cpu_seconds() - self._machine,
            "broker": self.broker.stop() if self.broker is not None else None,
            "postgres": self.postgres.stop() if self.postgres is not None else None,
        }


def fleet_args(spec: RunSpec, run_tag: str) -> list[str]:
    """Return the arguments every service process of ``spec`` gets."""
    args = [
        "--impl", spec.impl, "--run-tag", run_tag, "--bootstrap", spec.bootstrap,
        "--partitions", str(spec.partitions), "--topic-prefix", spec.topic_prefix,
    ]  # fmt: skip
    if spec.postgres_url:
        args += ["--postgres-url", spec.postgres_url]
    return args


def run(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` and return its measurements (see the module docs)."""
    from bench.peers.procs import Fleet
    from bench.peers.topics import recreate_topics, wait_for_groups

    impl = load(spec.impl)
    shape = impl.shape
    ctx = RunContext(spec)
    result: dict[str, Any] = {
        "impl": spec.impl,
        "sagas": spec.sagas,
        "partitions": spec.partitions,
        "replicas": spec.replicas,
    }
    tracker = Tracker()
    meters = Meters(spec)
    if not impl.uses_kafka:
        return _run_in_process(spec, impl, ctx, tracker, meters, result)
    if spec.recreate_topics:
        topics = [ctx.topic(t) for t in shape.event_types]
        recreate_topics(spec.bootstrap, topics, spec.partitions)
    collector = Collector(ctx, tracker)
    collector.start()
    injector = Injector(ctx, shape)
    members = [
        (s, r) for s in shape.services for r in range(1 if s in shape.single else spec.replicas)
    ]
    started = time.monotonic()
    fleet = Fleet(fleet_args(spec, ctx.run_tag), members)
    order_ids: list[str] = []
    reports: list[dict[str, Any]] = []

    def failed() -> BaseException | None:
        fleet.check_alive()
        return collector.error

    try:
        fleet.wait_ready()
        groups = {ctx.group(s): sum(1 for m, _ in members if m == s) for s in shape.services}
        result["group_join_s"] = round(wait_for_groups(spec.bootstrap, groups), 2)
        order_ids = _timed(spec, shape, tracker, injector, failed, started, meters, result, fleet)
    finally:
        reports = fleet.stop()
        fleet.kill()
        collector.stop()
        if collector.error is not None:
            result["collector_error"] = repr(collector.error)
    errors = [f"{r.get('service')}-{r.get('replica')}: {r['error']}" for r in reports if r.get("error")]
    if errors:
        result["service_errors"] = errors
    states = merge_states([r.get("states", {}) for r in reports])
    result["state_check"] = _check_states(shape, states, order_ids)
    by_service: dict[str, float] = {}
    for member in fleet.members:
        by_service[member.service] = by_service.get(member.service, 0.0) + (member.cpu_s or 0.0)
    ended = max(1, result.get("ended", 0))
    result["service_cpu_ms_per_saga_by_service"] = {
        s: round(cpu * 1000.0 / ended, 4) for s, cpu in by_service.items()
    }
    result["service_cpu_s"] = round(sum(by_service.values()), 3)
    result["cpu_ms_per_saga"] = round(sum(by_service.values()) * 1000.0 / ended, 4)
    result["processes"] = len(fleet.members)
    result["peak_rss_mb"] = round(sum(m.peak_rss_mb or 0.0 for m in fleet.members), 1)
    result["harness_peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _timed(
    spec: RunSpec,
    shape: SagaShape,
    tracker: Tracker,
    injector: Injector,
    failed: Callable[[], BaseException | None],
    started: float,
    meters: Meters,
    result: dict[str, Any],
    fleet: Any,
) -> list[str]:
    """Warm up, then inject the timed sagas and wait for their ends, metering everything."""
    warm_ids = [f"warmup-{i:04d}" for i in range(spec.warmup)]
    tracker.expect(warm_ids)
    injector.publish(injector.prepare(warm_ids, 0), tracker.starts)
    if not _wait(tracker, failed, time.monotonic() + WARMUP_TIMEOUT_S):
        raise RuntimeError(
            f"warm-up: {len(tracker.ends)}/{len(warm_ids)} sagas ended in {WARMUP_TIMEOUT_S} s"
        )
    result["startup_s"] = round(time.monotonic() - started, 2)
    order_ids = [f"order-{i:06d}" for i in range(spec.sagas)]
    prepared = injector.prepare(order_ids, spec.warmup)
    tracker.expect(order_ids)
    gc.collect()
    fleet.start_meters()
    meters.start()
    wall0 = time.monotonic()
    injector.publish(prepared, tracker.starts)
    injected = time.monotonic() - wall0
    finished = _wait(tracker, failed, wall0 + spec.budget_s)
    meters.stop()
    fleet.stop_meters()
    wall = time.monotonic() - wall0
    result.update(_measure(shape, tracker, order_ids, finished, meters.figures, wall))
    result["injection_s"] = round(injected, 3)
    return order_ids


def _run_in_process(
    spec: RunSpec,
    impl: Implementation,
    ctx: RunContext,
    tracker: Tracker,
    meters: Meters,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Run a Kafka-free implementation (DBOS) in this process: one application process."""
    ctx.observe = tracker.end
    shape = impl.shape
    started = time.monotonic()
    impl.start(ctx, None)
    order_ids: list[str] = []
    try:
        warm_ids = [f"warmup-{i:04d}" for i in range(spec.warmup)]
        tracker.expect(warm_ids)
        for index, order_id in enumerate(warm_ids):
            tracker.starts[order_id] = time.monotonic()
            impl.submit(order_id, shape.start_datum(order_id, index, _now_ms()))
        if not _wait(tracker, impl.failure, time.monotonic() + WARMUP_TIMEOUT_S):
            raise RuntimeError(f"warm-up: {len(tracker.ends)}/{len(warm_ids)} sagas ended")
        result["startup_s"] = round(time.monotonic() - started, 2)
        order_ids = [f"order-{i:06d}" for i in range(spec.sagas)]
        datums = [shape.start_datum(o, i, _now_ms()) for i, o in enumerate(order_ids)]
        tracker.expect(order_ids)
        gc.collect()
        meters.start()
        wall0 = time.monotonic()
        deadline = wall0 + spec.budget_s
        for order_id, datum in zip(order_ids, datums, strict=True):
            now = time.monotonic()
            if now > deadline:
                break
            tracker.starts[order_id] = now
            impl.submit(order_id, datum)
        finished = _wait(tracker, impl.failure, deadline)
        meters.stop()
        wall = time.monotonic() - wall0
        figures = dict(meters.figures)
        service_cpu = figures.pop("harness") or 0.0
        result.update(_measure(shape, tracker, order_ids, finished, figures, wall))
        ended = max(1, result["ended"])
        result["service_cpu_s"] = round(service_cpu, 3)
        result["cpu_ms_per_saga"] = round(service_cpu * 1000.0 / ended, 4)
        result["processes"] = 1
    finally:
        impl.stop()
    result["state_check"] = _check_states(shape, impl.states(), order_ids)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _wait(
    tracker: Tracker, failed: Callable[[], BaseException | None], until: float
) -> bool:
    """Wait for the expected sagas until ``until``; raise as soon as a service has failed."""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return tracker.wait(0)
        if tracker.wait(min(left, 0.5)):
            return True
        error = failed()
        if error is not None:
            raise RuntimeError(f"a service failed: {error!r}") from error


def _per_saga(seconds: float | None, ended: int) -> float | None:
    return None if seconds is None else round(seconds * 1000.0 / max(1, ended), 4)


def _measure(
    shape: SagaShape,
    tracker: Tracker,
    order_ids: list[str],
    finished: bool,
    cpu: Mapping[str, float | None],
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
        events += shape.events_of(order_id)
        if ends[order_id][1] != ("completed" if path == "completed" else "failed"):
            wrong += 1
    n = len(ended)
    return {
        "status": "ok" if finished and not wrong else ("timed out" if not finished else "wrong"),
        "ended": n,
        "duration_s": round(span, 3),
        "sagas_per_s": round(n / span, 1),
        "events_per_s": round(events / span, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(latencies[-1], 2) if latencies else None,
        },
        "harness_cpu_ms_per_saga": _per_saga(cpu.get("harness"), n),
        "broker_cpu_ms_per_saga": _per_saga(cpu.get("broker"), n),
        "postgres_cpu_ms_per_saga": _per_saga(cpu.get("postgres"), n),
        "machine_busy_cores": round((cpu.get("machine") or 0.0) / max(wall_s, 1e-9), 2),
        "timed_wall_s": round(wall_s, 3),
        "paths": paths,
        "wrong_outcomes": wrong,
        "duplicate_terminal_events": tracker.duplicates,
    }


def _check_states(
    shape: SagaShape, states: Mapping[str, Mapping[str, str]], order_ids: list[str]
) -> str:
    """Return "ok" when every service's state matches the expected ends, else a diff."""
    wanted = set(order_ids)
    got: dict[str, dict[str, int]] = {}
    for service, per_order in states.items():
        counts: dict[str, int] = {}
        for order_id, state in per_order.items():
            if order_id in wanted:
                counts[state] = counts.get(state, 0) + 1
        if counts:
            got[service] = counts
    expected = expected_state_counts(shape, order_ids)
    return "ok" if got == expected else f"expected {expected}, got {got}"


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and write its JSON to ``--out`` (or stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--impl", required=True, choices=sorted(IMPLEMENTATIONS))
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1, help="processes per service")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--broker-pid", type=int, default=None, help="meter this JVM's CPU")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--postgres-pid", type=int, default=None, help="meter this server")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the timed phase")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--topic-prefix", default="", help="tests only: isolate topic names")
    parser.add_argument("--recreate-topics", action="store_true", help="recreate topics first")
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
        replicas=args.replicas,
        postgres_url=args.postgres_url,
        broker_pid=args.broker_pid,
        postgres_pid=args.postgres_pid,
        recreate_topics=args.recreate_topics,
    )
    result = run(spec)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0 if result.get("status") == "ok" and result.get("state_check") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
