"""Static group membership on a real broker: a restarted member gets its partitions back fast.

A consumer created with an ``instance_id`` is a static member: closing it sends no
LeaveGroup (like a crash), and a new consumer with the same instance id takes its
place without waiting for the session timeout. The session timeout here is Kafka's
default 45 s; the replacement must be reading again well within 20 s.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from choreo.transports.base import Consumer, Record, TopicPartition, Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

pytestmark = pytest.mark.kafka

SESSION_TIMEOUT_MS = 45_000  # Kafka's default: a dynamic member's crash costs this much
REPLACEMENT_BOUND = 20.0  # seconds; far below the session timeout, generous for a slow CI


@pytest.fixture(params=["confluent", "kafka-python"])
def transport(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Transport:
    """Return a Kafka transport whose consumers keep the default 45 s session timeout."""
    config = KafkaConfig(
        bootstrap_servers=kafka_bootstrap,
        client_id="choreo-tests",
        consumer={
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 300,
            "fetch.wait.max.ms": 100,
        },
    )
    return open_transport(request.param, config=config)


def read_until(consumer: Consumer, done: list[TopicPartition], values: int) -> list[Record]:
    """Poll until ``consumer`` owns ``done`` and read ``values`` records, or fail after 20 s."""
    records: list[Record] = []
    deadline = time.monotonic() + REPLACEMENT_BOUND
    while sorted(consumer.assignment()) != done or len(records) < values:
        if time.monotonic() > deadline:
            pytest.fail(
                f"owned {consumer.assignment()} and read {len(records)}/{values} records"
                f" after {REPLACEMENT_BOUND}s"
            )
        records.extend(consumer.poll(timeout=0.2))
    return records


def static_members(bootstrap: str, group: str) -> list[str | None]:
    """Return the instance ids of the members the broker lists for ``group``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return [member.group_instance_id for member in description.members]


def test_replacement_with_same_instance_id_gets_partitions_back_quickly(
    transport: Transport, kafka_bootstrap: str
) -> None:
    """A closed static member stays in the group; its replacement resumes within 20 s."""
    topic = f"static-{uuid.uuid4().hex[:10]}"
    group = f"static-g-{uuid.uuid4().hex[:10]}"
    everything = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    transport.create_topics([topic], partitions=2)
    producer = transport.producer()
    try:
        for n in range(4):
            producer.publish(topic, f"old-{n}".encode(), key=f"k{n}".encode())
        producer.flush(30)

        first = transport.consumer(group, instance_id="worker-0")
        try:
            first.subscribe([topic])
            old = read_until(first, everything, 4)
            first.commit({r.topic_partition: r.offset + 1 for r in old})
        finally:
            first.close()
        assert static_members(kafka_bootstrap, group) == ["worker-0"]  # no LeaveGroup sent

        for n in range(2):
            producer.publish(topic, f"new-{n}".encode(), key=f"k{n}".encode())
        producer.flush(30)
        started = time.monotonic()
        second = transport.consumer(group, instance_id="worker-0")
        try:
            second.subscribe([topic])
            new = read_until(second, everything, 2)
        finally:
            second.close()
        assert time.monotonic() - started < REPLACEMENT_BOUND
        assert sorted(r.value or b"" for r in new) == [b"new-0", b"new-1"]
    finally:
        producer.close()
