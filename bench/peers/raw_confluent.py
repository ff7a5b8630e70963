"""The ceiling: the saga's four services as hand-written confluent-kafka loops.

Each service is one thread with one consumer and one producer:

- wait for the first record with ``poll``, then take what else is there with
  ``consume(num_messages=..., timeout=0)`` (``consume`` with a timeout waits for a *full*
  batch, which would add up to the timeout to every hop at low load);
- per record: look the writer schema up by the single-object fingerprint, fastavro
  ``schemaless_reader``, the step (a dict update, :mod:`bench.peers.choreography`),
  ``schemaless_writer``, ``produce`` keyed by the correlation id with four headers (event
  type, a new event id, correlation id, causation id);
- per batch: ``flush`` (every output acknowledged, ``acks=all``, idempotent producer), then
  a synchronous ``commit`` of the batch's offsets: at-least-once, like choreo's worker.

No envelope validation, deduplication, retries, dead letters or outbox: the floor any
framework's cost is measured against.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bench.peers import choreography as ch
from bench.peers.harness import RunContext

BATCH = 500


class RawService(threading.Thread):
    """One service: its consumer loop in a thread of its own."""

    def __init__(self, ctx: RunContext, name: str, stop: threading.Event) -> None:
        super().__init__(name=f"raw-{name}", daemon=True)
        self.service = name
        self.stop_event = stop
        self.state: dict[str, str] = {}
        self.codec = ctx.codec
        self.routes = {ctx.topic(t): ch.HANDLERS[t][1] for t in ch.SUBSCRIPTIONS[name]}
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
        consumer.subscribe(list(self.routes))
        produce, flush, commit = producer.produce, producer.flush, consumer.commit
        routes, out_topics, state = self.routes, self.out_topics, self.state
        encode, decode = self.codec.encode, self.codec.decode
        new_id = uuid.uuid4
        h_type, h_id, h_cid, h_cause = ch.H_TYPE, ch.H_ID, ch.H_CID, ch.H_CAUSE
        type_bytes = {t: t.encode() for t in ch.EVENT_TYPES}
        stop = self.stop_event
        while not stop.is_set():
            messages = consumer.consume(BATCH, 0)
            if not messages:
                first = consumer.poll(0.1)
                if first is None:
                    continue
                messages = [first, *consumer.consume(BATCH - 1, 0)]
            offsets: dict[tuple[str, int], int] = {}
            # A message without error has a topic, partition, offset; ours have key and value.
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                topic: str = msg.topic()  # type: ignore[assignment]
                _, datum = decode(msg.value())  # type: ignore[arg-type]
                out_type, out = routes[topic](state, datum)
                key = msg.key()
                parent: Any = b""
                headers: Any = msg.headers() or ()
                for name, value in headers:
                    if name == h_id:
                        parent = value
                        break
                produce(
                    out_topics[out_type],
                    encode(out_type, out),
                    key,
                    headers=[
                        (h_type, type_bytes[out_type]),
                        (h_id, str(new_id()).encode()),
                        (h_cid, key),
                        (h_cause, parent),
                    ],
                )
                offsets[(topic, msg.partition())] = msg.offset() + 1  # type: ignore[index,operator]
            if flush(30):
                raise RuntimeError(f"{self.service}: records not acknowledged in 30 s")
            commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )


class RawImplementation:
    """Four hand-written services, one thread each."""

    name = "raw"
    uses_kafka = True

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._services: list[RawService] = []

    def start(self, ctx: RunContext) -> None:
        """Start one thread per service."""
        self._services = [RawService(ctx, name, self._stop) for name in ch.SUBSCRIPTIONS]
        for service in self._services:
            service.start()

    def submit(self, order_id: str, datum: dict[str, Any]) -> None:
        """Not used: start events come from the harness's injector."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every loop after its batch in hand and wait for it."""
        self._stop.set()
        for service in self._services:
            service.join(30)
        errors = [s.error for s in self._services if s.error is not None]
        if errors:
            raise RuntimeError(f"raw service failed: {errors[0]!r}") from errors[0]

    def states(self) -> dict[str, dict[str, str]]:
        """Return each service's state dict."""
        return {s.service: s.state for s in self._services}

    def failure(self) -> BaseException | None:
        """Return the first error that stopped a service loop, or None."""
        return next((s.error for s in self._services if s.error is not None), None)


def create() -> RawImplementation:
    """Return the raw confluent-kafka implementation."""
    return RawImplementation()
