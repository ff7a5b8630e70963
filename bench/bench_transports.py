"""Throughput of each transport: publish N keyed records with headers, flush, then poll them.

Usage: ``python bench/bench_transports.py [--records N] [--kafka HOST:PORT]``. The memory
transport always runs; the Kafka transports run when ``--kafka`` (or
``$CHOREO_KAFKA_BOOTSTRAP``) names a broker. Prints microseconds per record for the
publish side (publish + one flush) and the poll side (batches of 500), and records/s.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from choreo.transports import KafkaConfig, MemoryBus, MemoryTransport, Transport
from choreo.transports.confluent import ConfluentTransport
from choreo.transports.kafka_python import KafkaPythonTransport

HEADERS = tuple((f"choreo-h{i}", b"x" * 36) for i in range(9))
VALUE = b"v" * 120


def bench(transport: Transport, records: int, partitions: int = 4) -> tuple[float, float]:
    """Return (publish µs/record, poll µs/record) for one transport."""
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    transport.create_topics([topic], partitions=partitions)
    keys = [f"saga-{n}".encode() for n in range(max(1, records // 5))]
    producer = transport.producer()
    started = time.perf_counter()
    for n in range(records):
        producer.publish(topic, VALUE, key=keys[n % len(keys)], headers=HEADERS)
    producer.flush(120)
    published = time.perf_counter() - started
    producer.close()
    consumer = transport.consumer(f"bench-{uuid.uuid4().hex[:10]}")
    consumer.subscribe([topic])
    first = 0
    while not first:  # joining the group is not timed: start after the first batch
        first = len(consumer.poll(max_records=500, timeout=1.0))
    got = first
    started = time.perf_counter()
    while got < records:
        got += len(consumer.poll(max_records=500, timeout=1.0))
    polled = time.perf_counter() - started
    consumer.close()
    return published / records * 1e6, polled / max(1, records - first) * 1e6


def main() -> None:
    """Run the benchmark for every available transport and print a small table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--kafka", default=os.environ.get("CHOREO_KAFKA_BOOTSTRAP"))
    args = parser.parse_args()
    transports: list[Transport] = [MemoryTransport(MemoryBus())]
    if args.kafka:
        config = KafkaConfig(bootstrap_servers=args.kafka, client_id="choreo-bench")
        transports += [ConfluentTransport(config), KafkaPythonTransport(config)]
    print(f"{'transport':<14}{'publish µs':>12}{'poll µs':>10}{'records/s':>12}")
    for transport in transports:
        publish_us, poll_us = bench(transport, args.records)
        rate = 1e6 / (publish_us + poll_us)
        print(f"{transport.name:<14}{publish_us:>12.2f}{poll_us:>10.2f}{rate:>12,.0f}")


if __name__ == "__main__":
    main()
