"""FastStream (aiokafka underneath): the saga's four services as decorated subscribers.

FastStream's idioms: one :class:`faststream.kafka.KafkaBroker`, one ``@broker.subscriber``
per service listening to all of the service's topics in one consumer group (so one
consumer per service, as in the other peers), a custom ``decoder`` that reads the Avro
single-object payload with fastavro, a typed ``async`` handler that dispatches on the
record's topic to the same dict-updating step as the raw loop, and ``broker.publish``
with the key and headers.

Settings, chosen to give FastStream its fastest reasonable configuration:

- producer ``acks="all"``, ``enable_idempotence=True``, ``linger_ms=5`` (as every peer);
- subscribers read committed records from the earliest offset with FastStream's default
  acknowledgement policy (``ACK_FIRST``: aiokafka auto-commits every 5 s). That is weaker
  than the at-least-once commit-after-publish of raw and choreo, and cheaper;
- ``broker.publish(..., no_confirm=True)`` queues the record without awaiting its
  acknowledgement (awaiting each one costs a broker round trip per event);
- ``logger=None``: no per-message access log (choreo logs nothing per event either).

Each service is a process of its own with its own broker object, whose asyncio event loop
runs in one thread.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage

from bench.peers import choreography as ch
from bench.peers.harness import RunContext
from bench.peers.shape import CHOREOGRAPHED, SagaShape

START_TIMEOUT_S = 60.0


class FastStreamImplementation:
    """FastStream subscribers (one per service) on a broker object, in an event loop thread."""

    name = "faststream"
    uses_kafka = True
    shape: SagaShape = CHOREOGRAPHED

    def __init__(self) -> None:
        self._states: dict[str, dict[str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._services: list[str] = []

    def start(self, ctx: RunContext, service: str | None = None) -> None:
        """Start the event loop thread for ``service`` (None: every one); wait until it runs."""
        self._services = [service] if service else list(ch.SUBSCRIPTIONS)
        self._thread = threading.Thread(
            target=self._run, args=(ctx,), name="faststream", daemon=True
        )
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise RuntimeError("FastStream did not start in time")
        if self._error is not None:
            raise RuntimeError("FastStream failed to start") from self._error

    def _run(self, ctx: RunContext) -> None:
        try:
            asyncio.run(self._main(ctx))
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _main(self, ctx: RunContext) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        broker = KafkaBroker(
            ctx.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            logger=None,
        )
        for service in self._services:
            self._subscribe(broker, ctx, service)
        await broker.start()
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            await broker.stop()

    def _subscribe(self, broker: KafkaBroker, ctx: RunContext, service: str) -> None:
        """Register the service's subscriber: all its topics, one group, one handler."""
        state = self._states.setdefault(service, {})
        codec = ctx.codec
        steps = {ctx.topic(t): ch.HANDLERS[t][1] for t in ch.SUBSCRIPTIONS[service]}
        out_topics = {t: ctx.topic(t) for t in ch.EVENT_TYPES}
        publish = broker.publish

        async def avro_decoder(msg: StreamMessage[Any]) -> dict[str, Any]:
            return codec.decode(msg.body)[1]

        @broker.subscriber(
            *steps,
            group_id=ctx.group(service),
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            decoder=avro_decoder,
        )
        async def handle(body: dict[str, Any], msg: KafkaMessage) -> None:
            record: Any = msg.raw_message  # one ConsumerRecord (not a batch subscriber)
            out_type, out = steps[record.topic](state, body)
            key = record.key
            await publish(
                codec.encode(out_type, out),
                out_topics[out_type],
                key=key,
                headers={
                    ch.H_TYPE: out_type,
                    ch.H_ID: str(uuid.uuid4()),
                    ch.H_CID: key.decode(),
                    ch.H_CAUSE: msg.headers.get(ch.H_ID, ""),
                },
                no_confirm=True,
            )

    def submit(self, order_id: str, datum: dict[str, Any]) -> None:
        """Not used: start events come from the harness's injector."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the broker (flushing its producer) and its event loop thread."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(60)

    def states(self) -> dict[str, dict[str, str]]:
        """Return each service's state dict."""
        return self._states

    def failure(self) -> BaseException | None:
        """Return the error that ended the event loop, or None."""
        return self._error


def create() -> FastStreamImplementation:
    """Return the FastStream implementation."""
    return FastStreamImplementation()
