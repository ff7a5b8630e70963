"""Poison records and partition statistics: the faults that are not a signal to a process.

:func:`inject_poison` writes records no service can handle into the topics the services
read: bare garbage bytes, and records with valid choreo headers (event type, id,
correlation id ``poison-...``, role) whose payload is garbage, a single-object encoding with
an unknown schema fingerprint, or empty. Each must be dead-lettered (or skipped) without
stopping a worker or touching any saga. :func:`busiest_partitions` ranks partitions by
how many records they hold, to pick the leader worth killing.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable
from typing import Any

from choreo.model.envelope import Header, Role

POISON_KINDS = ("garbage", "headers-garbage", "headers-unknown-fingerprint", "headers-empty")


def _headers(event_type: str) -> list[tuple[str, str | bytes | None]]:
    correlation = f"poison-{uuid.uuid4().hex[:12]}"
    return [
        (Header.EVENT_TYPE, event_type.encode()),
        (Header.EVENT_ID, str(uuid.uuid4()).encode()),
        (Header.CORRELATION_ID, correlation.encode()),
        (Header.CAUSATION_ID, str(uuid.uuid4()).encode()),
        (Header.SAGA, b"OrderFulfillment"),
        (Header.ROLE, Role.STEP.value.encode()),
        (Header.SERVICE, b"chaos"),
        (Header.PRODUCED_AT, str(time.time_ns() // 1_000_000).encode()),
    ]


def _poison(
    kind: str, event_type: str, rng: random.Random
) -> tuple[bytes, list[tuple[str, str | bytes | None]]]:
    """Return the value and headers of one poison record of ``kind``."""
    garbage = rng.randbytes(rng.randint(1, 200))
    if kind == "garbage":
        return garbage, []
    if kind == "headers-garbage":
        return garbage, _headers(event_type)
    if kind == "headers-unknown-fingerprint":
        return b"\xc3\x01" + rng.randbytes(8) + garbage, _headers(event_type)
    return b"", _headers(event_type)


def inject_poison(
    bootstrap: str, topics: Iterable[tuple[str, str]], per_topic: int, seed: int
) -> int:
    """Write ``per_topic`` poison records of every kind into each (topic, event type); count."""
    from confluent_kafka import Producer

    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    written = 0
    for topic, event_type in topics:
        for _ in range(per_topic):
            for kind in POISON_KINDS:
                value, headers = _poison(kind, event_type, rng)
                producer.produce(
                    topic, value, key=f"poison-{rng.random()}".encode(), headers=headers
                )
                written += 1
        producer.poll(0)
    left = producer.flush(30)
    return written - left


def busiest_partitions(bootstrap: str, topics: Iterable[str], count: int) -> list[tuple[str, int]]:
    """Return the ``count`` partitions of ``topics`` holding the most records."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{uuid.uuid4().hex}"})
    sizes: list[tuple[int, str, int]] = []
    try:
        metadata = consumer.list_topics(timeout=10)
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None:
                continue
            for partition in described.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                sizes.append((high - low, topic, partition))
    finally:
        consumer.close()
    sizes.sort(reverse=True)
    return [(topic, partition) for _, topic, partition in sizes[:count]]


_ADMINS: dict[str, Any] = {}


def group_members(bootstrap: str, group: str) -> list[str]:
    """Return the instance ids (or member ids) of ``group``'s current members."""
    from confluent_kafka.admin import AdminClient

    admin = _ADMINS.get(bootstrap)
    if admin is None:
        admin = _ADMINS[bootstrap] = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
    return [m.group_instance_id or m.member_id for m in described.members]


def delete_topics(bootstrap: str, prefix: str) -> int:
    """Delete every topic named ``prefix*`` (a finished scenario's); return how many.

    Also drops the cached admin client of :func:`group_members` for ``bootstrap``: a
    finished scenario's broker may be stopped next, and a cached client would keep
    reconnecting to it.
    """
    from confluent_kafka.admin import AdminClient

    _ADMINS.pop(bootstrap, None)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    if not topics:
        return 0
    for future in admin.delete_topics(topics, operation_timeout=60).values():
        future.result(90)
    return len(topics)
