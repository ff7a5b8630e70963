"""The baselines: the saga's services as hand-written confluent-kafka loops (raw, ceiling).

Each service is one process (:mod:`bench.peers.service`) running one loop with one
consumer and one producer:

- wait for the first record with ``poll``, then take what else is there with
  ``consume(num_messages=..., timeout=0)`` (``consume`` with a timeout waits for a *full*
  batch, which would add up to the timeout to every hop at low load);
- per record: decode the single-object payload, the step (a dict update,
  :mod:`bench.peers.choreography`), encode the output with its headers;
- per batch: ``produce`` the outputs one after the other, keyed by the correlation id (as
  choreo's worker publishes a batch's output once the batch is handled: producing each
  output inside the batch's loop lets ``linger.ms`` expire mid-batch and costs the client
  and the broker up to twice the ProduceRequests, see ``ceiling-interleaved``), ``flush``
  (every output acknowledged, ``acks=all``, idempotent producer), then
  the batch's offsets are held and committed synchronously at most every
  :data:`COMMIT_INTERVAL` seconds (choreo's default ``WorkerConfig.commit_interval``), when
  partitions are revoked, and at stop: at-least-once with choreo's default delivery
  (publish, flush once, commit offsets no more often than choreo does).

Two flavours, measured side by side:

- ``raw``: fastavro ``schemaless_reader``/``schemaless_writer``, four headers (type, a
  ``uuid4`` event id, correlation id, causation id);
- ``ceiling``: what choreo itself must do at least, hand-written: choreo's compiled codec
  (:class:`~choreo.avro.codec.SingleObjectCodec`, dicts in and out), choreo's derived event
  ids (uuid5 of ``<parent id>/<step>/<index>``, computed as choreo's worker inlines it) and
  the same nine envelope headers choreo writes, so the broker gets the same bytes.

Neither validates envelopes, deduplicates, retries, dead-letters or keeps an outbox: the
floor a framework's cost is measured against.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bench.peers import choreography as ch
from bench.peers import clientstats
from bench.peers.harness import RunContext
from bench.peers.shape import CHOREOGRAPHED, SagaShape
from choreo.runtime.config import WorkerConfig

BATCH = 500
COMMIT_INTERVAL: Final = WorkerConfig().commit_interval
"""Seconds between two offset commits: choreo's default, so both commit equally often."""
_EVENT_ID_NAMESPACE: Final = uuid.UUID("6f0c4d1e-8a51-5b3c-9d2e-2f6f3c0a7b14")  # choreo's
_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}

Decode = Callable[[bytes], tuple[str, dict[str, Any]]]
Encode = Callable[[str, dict[str, Any]], bytes]
Headers = Callable[[str, str, bytes, bytes, bytes], Any]
"""(consumed type, emitted type, key, parent id, produced-at) -> the output's headers."""


def raw_headers() -> Headers:
    """Return raw's header builder: type, a uuid4 id, correlation id, causation id."""
    new_id = uuid.uuid4
    h_type, h_id, h_cid, h_cause = ch.H_TYPE, ch.H_ID, ch.H_CID, ch.H_CAUSE
    type_bytes = {t: t.encode() for t in ch.EVENT_TYPES}

    def build(consumed: str, out_type: str, key: bytes, parent: bytes, at: bytes) -> Any:
        return [
            (h_type, type_bytes[out_type]),
            (h_id, str(new_id()).encode()),
            (h_cid, key),
            (h_cause, parent),
        ]

    return build


_COMPENSATIONS: Final = {
    "release": "reserve",
    "refund": "charge",
    "cancel": "create_shipment",
    "reject": "start",  # undoes the saga: choreo names its start
}
"""Each compensation and the step it undoes: choreo's step header names the undone step."""
_FAILURES: Final = {ch.RESERVATION_FAILED, ch.PAYMENT_DECLINED, ch.DISPATCH_FAILED}


def _role_and_step(service: str, step: str, out_type: str) -> tuple[bytes, bytes]:
    """Return the role and step headers choreo writes for ``out_type`` emitted by ``step``."""
    if out_type == ch.ORDER_COMPLETED:
        role = "completed"
    elif out_type == ch.ORDER_FAILED:
        role = "failed"
    elif out_type in _FAILURES:
        role = "failure"
    elif step in _COMPENSATIONS:
        role = "compensation"
    else:
        role = "step"
    return role.encode(), f"{service}.{_COMPENSATIONS.get(step, step)}".encode()


def ceiling_headers() -> Headers:
    """Return the ceiling's header builder: choreo's nine headers and derived event ids."""
    namespace = hashlib.sha1(_EVENT_ID_NAMESPACE.bytes, usedforsecurity=False)
    variant = _VARIANT
    fixed: dict[tuple[str, str], tuple[Any, ...]] = {}
    for consumed, (service, step) in ch.HANDLERS.items():
        for out_type in ch.EVENT_TYPES:
            role, step_header = _role_and_step(service, step.__name__, out_type)
            suffix = f"/{service}.{step.__name__}/0".encode()
            fixed[(consumed, out_type)] = (
                (ch.H_TYPE, out_type.encode()),
                (ch.H_SAGA, ch.SAGA.encode()),
                (ch.H_ROLE, role),
                (ch.H_SERVICE, service.encode()),
                (ch.H_STEP, step_header),
                suffix,
            )
    h_id, h_cid, h_at, h_cause = ch.H_ID, ch.H_CID, ch.H_AT, ch.H_CAUSE

    def build(consumed: str, out_type: str, key: bytes, parent: bytes, at: bytes) -> Any:
        type_h, saga_h, role_h, service_h, step_h, suffix = fixed[(consumed, out_type)]
        digest = namespace.copy()  # uuid5 of "<parent id>/<step>/<index>", as choreo's worker
        digest.update(parent + suffix)
        h = digest.hexdigest()
        event_id = f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}"
        return [
            type_h,
            (h_id, event_id.encode()),
            (h_cid, key),
            saga_h,
            role_h,
            service_h,
            (h_at, at),
            (h_cause, parent),
            step_h,
        ]

    return build


class LoopService(threading.Thread):
    """One service: its consumer loop in a thread of its own."""

    def __init__(
        self,
        ctx: RunContext,
        name: str,
        stop: threading.Event,
        codec: tuple[Decode, Encode],
        headers: Headers,
        *,
        burst: bool = True,
    ) -> None:
        super().__init__(name=f"loop-{name}", daemon=True)
        self.service = name
        self.burst = burst
        self.stop_event = stop
        self.state: dict[str, str] = {}
        self.decode, self.encode = codec
        self.headers = headers
        self.routes = {ctx.topic(t): (t, ch.HANDLERS[t][1]) for t in ch.SUBSCRIPTIONS[name]}
        self.out_topics = {t: ctx.topic(t) for t in ch.EVENT_TYPES}
        self.consumer = Consumer(ctx.confluent_consumer(ctx.group(name)))
        self.producer = Producer({**ctx.confluent_producer(), "error_cb": self._on_error})
        self.error: BaseException | None = None

    @staticmethod
    def _on_error(err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)

    def run(self) -> None:
        """Consume, handle, produce, flush, commit; until stopped."""
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
        finally:
            self.producer.flush(10)
            self.consumer.close()

    def _loop(self) -> None:
        consumer, producer = self.consumer, self.producer
        held: dict[tuple[str, int], int] = {}  # handled and flushed, not committed yet
        commit = consumer.commit

        def commit_held(*_: object) -> None:
            if held:
                offsets = [TopicPartition(t, p, o) for (t, p), o in held.items()]
                commit(offsets=offsets, asynchronous=False)
                held.clear()

        consumer.subscribe(list(self.routes), on_revoke=commit_held)
        produce, flush = producer.produce, producer.flush
        routes, out_topics, state = self.routes, self.out_topics, self.state
        encode, decode, headers_for = self.encode, self.decode, self.headers
        h_id = ch.H_ID
        stop = self.stop_event
        count_batch = clientstats.count_batch  # --client-stats only
        outputs: list[tuple[str, bytes, Any, Any]] = []  # a batch's output, produced at its end
        emit: Callable[[tuple[str, bytes, Any, Any]], object] = outputs.append
        if not self.burst:  # the diagnostic: each output produced as soon as it is built
            emit = lambda o: produce(o[0], o[1], o[2], headers=o[3])  # noqa: E731
        last_commit = float("-inf")
        while not stop.is_set():
            if held and time.monotonic() - last_commit >= COMMIT_INTERVAL:
                last_commit = time.monotonic()
                commit_held()
            messages = consumer.consume(BATCH, 0)
            if not messages:
                first = consumer.poll(0.1)
                if first is None:
                    continue
                messages = [first, *consumer.consume(BATCH - 1, 0)]
            count_batch(len(messages))
            at = str(time.time_ns() // 1_000_000).encode()
            offsets = held
            # A message without error has a topic, partition, offset; ours have key and value.
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                topic: str = msg.topic()  # type: ignore[assignment]
                consumed, step = routes[topic]
                _, datum = decode(msg.value())  # type: ignore[arg-type]
                out_type, out = step(state, datum)
                key: Any = msg.key()
                parent: Any = b""
                record_headers: Any = msg.headers() or ()
                for name, value in record_headers:
                    if name == h_id:
                        parent = value
                        break
                output = (
                    out_topics[out_type],
                    encode(out_type, out),
                    key,
                    headers_for(consumed, out_type, key, parent, at),
                )
                emit(output)
                offsets[(topic, msg.partition())] = msg.offset() + 1  # type: ignore[index,operator]
            for out_topic, value, out_key, out_headers in outputs:
                produce(out_topic, value, out_key, headers=out_headers)
            outputs.clear()
            if flush(30):
                raise RuntimeError(f"{self.service}: records not acknowledged in 30 s")
        commit_held()


class LoopImplementation:
    """Hand-written services, one loop thread each (one per process when deployed)."""

    uses_kafka = True
    shape: SagaShape = CHOREOGRAPHED

    def __init__(self, name: str, *, burst: bool = True) -> None:
        self.name = name
        self.burst = burst
        self._stop = threading.Event()
        self._services: list[LoopService] = []

    def _codec(self, ctx: RunContext) -> tuple[Decode, Encode]:
        if self.name == "raw":
            return ctx.codec.decode, ctx.codec.encode  # the ceiling's flavours: choreo's codec
        from choreo.avro.codec import SingleObjectCodec
        from choreo.avro.loader import load_directory

        codec = SingleObjectCodec(load_directory(ch.REPO_ROOT / "schemas"))
        return codec.decode_any, codec.encode

    def start(self, ctx: RunContext, service: str | None = None) -> None:
        """Start one loop thread for ``service`` (None: for every service)."""
        codec = self._codec(ctx)
        headers = raw_headers() if self.name == "raw" else ceiling_headers()
        names = [service] if service else list(ch.SUBSCRIPTIONS)
        self._services = [
            LoopService(ctx, n, self._stop, codec, headers, burst=self.burst) for n in names
        ]
        for loop in self._services:
            loop.start()

    def submit(self, order_id: str, datum: dict[str, Any]) -> None:
        """Not used: start events come from the harness's injector."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every loop after its batch in hand and wait for it."""
        self._stop.set()
        for loop in self._services:
            loop.join(30)
        errors = [s.error for s in self._services if s.error is not None]
        if errors:
            raise RuntimeError(f"{self.name} service failed: {errors[0]!r}") from errors[0]

    def states(self) -> dict[str, dict[str, str]]:
        """Return each service's state dict."""
        return {s.service: s.state for s in self._services}

    def failure(self) -> BaseException | None:
        """Return the first error that stopped a service loop, or None."""
        return next((s.error for s in self._services if s.error is not None), None)


def create() -> LoopImplementation:
    """Return the raw confluent-kafka implementation (fastavro, uuid4 ids, four headers)."""
    return LoopImplementation("raw")


def create_ceiling() -> LoopImplementation:
    """Return the ceiling (choreo's codec, derived ids and headers, hand-written loop)."""
    return LoopImplementation("ceiling")


def create_ceiling_interleaved() -> LoopImplementation:
    """Return the ceiling producing each output as soon as it is built (a diagnostic)."""
    return LoopImplementation("ceiling-interleaved", burst=False)
