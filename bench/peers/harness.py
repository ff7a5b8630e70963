"""What every run of the peers benchmark shares: spec, context, implementations, observers.

:class:`RunSpec` says what to run, :class:`RunContext` is what an implementation is given
(Kafka settings, topic and group names, the PostgreSQL URL), :data:`IMPLEMENTATIONS` names
every peer, and the harness's own Kafka clients observe a run from outside the services:
the :class:`Injector` publishes start events, the :class:`Collector` consumes terminal
events into a :class:`Tracker`. :mod:`bench.peers.runner` runs one measurement with them.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from bench.peers import choreography as ch
from bench.peers import clientstats
from bench.peers.shape import SagaShape

logger = logging.getLogger("bench.peers.harness")

IMPLEMENTATIONS: Final[Mapping[str, tuple[str, str]]] = {
    "ceiling": ("bench.peers.raw_confluent", "create_ceiling"),
    "ceiling-interleaved": ("bench.peers.raw_confluent", "create_ceiling_interleaved"),
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
    client_stats: bool = False
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
            **clientstats.settings(),
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
            **clientstats.settings(),
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
        now = now_ms()
        prepared = []
        for index, order_id in enumerate(order_ids, start=first_index):
            payload = encode(shape.start_event, shape.start_datum(order_id, index, now))
            headers = shape.start_headers(order_id, str(uuid.uuid4()), now)
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


def now_ms() -> int:
    return time.time_ns() // 1_000_000
