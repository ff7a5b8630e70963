"""The inventory service's ``reserve`` step without choreo, for the ping-pong benchmark.

    python -m bench.pingpong_peers ceiling --bootstrap HOST:PORT --prefix P --group G
    python -m bench.pingpong_peers faststream --bootstrap HOST:PORT --prefix P --group G

Both consume ``OrderCreated`` and produce ``InventoryReserved`` or
``InventoryReservationFailed`` (the same step, :func:`bench.peers.choreography.reserve`),
with choreo's codec (:class:`~choreo.avro.codec.SingleObjectCodec`, records as dicts) and
choreo's envelope headers (derived event ids), until SIGTERM:

- **ceiling**: a hand-written confluent-kafka loop with choreo's client settings (the
  transport's defaults, :mod:`choreo.transports.config`) and choreo's default commit
  semantics: per polled batch, produce, one ``flush``, then a synchronous offset commit
  (at most every ``WorkerConfig().commit_interval`` seconds, as choreo's worker does);
  no inbox, dead letters, retries or hooks;
- **faststream**: FastStream's ``KafkaBroker`` (aiokafka), one subscriber, a decoder
  calling choreo's codec, ``publish(..., no_confirm=True)``, FastStream's default ack
  policy (aiokafka auto-commit) and producer batching (``linger_ms=0``: a publish that is
  not flushed waits for the linger, so the peers benchmark's ``linger_ms=5`` would add up
  to 5 ms per hop), ``acks="all"`` with idempotence as choreo, ``logger=None``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
import time
from typing import Any

import confluent_kafka as ck

from bench.peers import choreography as ch
from bench.sagaload import Layout
from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.runtime import WorkerConfig, derived_event_id
from choreo.transports.config import KafkaConfig

STEP = "inventory.reserve"


def _codec() -> SingleObjectCodec:
    return SingleObjectCodec(load_directory(ch.REPO_ROOT / "schemas"))


def _reply(codec: SingleObjectCodec, state: dict[str, str], value: bytes,
           headers: dict[str, bytes]) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """Return the reply's event type, payload and envelope headers."""
    datum = codec.decode(value, ch.ORDER_CREATED)
    out_type, out = ch.reserve(state, datum)
    parent = headers[ch.H_ID].decode()
    role = b"failed" if out_type == ch.RESERVATION_FAILED else b"step"
    return out_type, codec.encode(out_type, out), [
        (ch.H_TYPE, out_type.encode()),
        (ch.H_ID, derived_event_id(parent, STEP, 0).encode()),
        (ch.H_CID, headers[ch.H_CID]),
        (ch.H_SAGA, headers[ch.H_SAGA]),
        (ch.H_ROLE, role),
        (ch.H_SERVICE, b"inventory"),
        (ch.H_AT, str(time.time_ns() // 1_000_000).encode()),
        (ch.H_CAUSE, headers[ch.H_ID]),
        (ch.H_STEP, STEP.encode()),
    ]


def run_ceiling(bootstrap: str, layout: Layout, group: str, stop: threading.Event) -> None:
    """Run the hand-written confluent-kafka loop until ``stop`` is set."""
    kafka = KafkaConfig(bootstrap_servers=bootstrap)
    producer = ck.Producer({**kafka.producer_settings(), "partitioner": "murmur2_random",
                            "delivery.report.only.error": True})
    consumer = ck.Consumer({**kafka.consumer_settings(group), "enable.auto.offset.store": False,
                            "enable.partition.eof": False})
    consumer.subscribe([layout.topic(ch.ORDER_CREATED)])
    codec, state = _codec(), {}
    interval = WorkerConfig().commit_interval
    held: dict[tuple[str, int], int] = {}
    last_commit = float("-inf")
    while not stop.is_set():
        messages = consumer.consume(500, 0)
        if not messages:
            first = consumer.poll(1.0)
            messages = [first, *consumer.consume(499, 0)] if first is not None else []
        for msg in messages:
            if msg.error() is not None:
                continue
            headers = dict(msg.headers() or ())
            out_type, payload, out_headers = _reply(codec, state, msg.value(), headers)
            producer.produce(layout.topic(out_type), payload, msg.key(), headers=out_headers)
            held[(msg.topic(), msg.partition())] = msg.offset() + 1
        if messages:
            producer.flush()
        if held and time.monotonic() - last_commit >= interval:
            consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in held.items()],
                            asynchronous=False)
            held.clear()
            last_commit = time.monotonic()
    consumer.close()
    producer.flush(10)


def run_faststream(bootstrap: str, layout: Layout, group: str, stop: threading.Event) -> None:
    """Run one FastStream subscriber until ``stop`` is set."""
    from faststream.kafka import KafkaBroker
    from faststream.kafka.annotations import KafkaMessage
    from faststream.message import StreamMessage

    codec, state = _codec(), {}

    async def main() -> None:
        broker = KafkaBroker(bootstrap, acks="all", enable_idempotence=True, logger=None)

        async def decoder(msg: StreamMessage[Any]) -> bytes:
            return msg.body

        @broker.subscriber(layout.topic(ch.ORDER_CREATED), group_id=group,
                           auto_offset_reset="earliest", isolation_level="read_committed",
                           decoder=decoder)
        async def handle(body: bytes, msg: KafkaMessage) -> None:
            record: Any = msg.raw_message
            headers = {k: v for k, v in record.headers}
            out_type, payload, out_headers = _reply(codec, state, body, headers)
            await broker.publish(payload, layout.topic(out_type), key=record.key,
                                 headers={k: v.decode() for k, v in out_headers},
                                 no_confirm=True)

        await broker.start()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await broker.stop()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    """Run one implementation until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("impl", choices=("ceiling", "faststream"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--layout", default="event-type")
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run = run_ceiling if args.impl == "ceiling" else run_faststream
    run(args.bootstrap, Layout(args.layout, args.prefix), args.group, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
