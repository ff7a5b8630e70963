"""A pause ends with the assignment: a partition paused, revoked and assigned again is read.

The worker pauses every partition while it backs off after an error. When a rebalance
revokes them meanwhile (after a broker restart it does), the partitions it gets back
must be read again; librdkafka on its own keeps a partition's pause across a
reassignment, and a worker that got its partitions back paused handled nothing for good
(seen in chaos ``eos-broker-restart``). The other clients drop a pause with the
assignment, as the transports' contract does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from choreo.transports.base import Consumer, Record, TopicPartition, Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport
from choreo.transports.partitioner import partition_for

pytestmark = pytest.mark.kafka

BOUND = 20.0  # seconds for a rebalance or a read on a slow CI


@pytest.fixture(params=["confluent", "kafka-python"])
def transport(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Transport:
    """Return a Kafka transport with quick heartbeats (rebalances settle fast)."""
    config = KafkaConfig(
        bootstrap_servers=kafka_bootstrap,
        client_id="choreo-tests",
        consumer={"heartbeat.interval.ms": 300, "fetch.wait.max.ms": 100},
    )
    return open_transport(request.param, config=config)


def _one_key_per_partition(partitions: int) -> list[bytes]:
    """Return a key for each partition, in partition order (Kafka's hash)."""
    keys: dict[int, bytes] = {}
    for n in range(1000):
        keys.setdefault(partition_for(f"k{n}".encode(), partitions), f"k{n}".encode())
    return [keys[p] for p in range(partitions)]


def _poll_until(consumers: list[Consumer], done: Callable[[], bool], what: str) -> None:
    """Poll every consumer until ``done()`` is true (the records read are dropped)."""
    deadline = time.monotonic() + BOUND
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {BOUND:.0f} s")
        for consumer in consumers:
            consumer.poll(timeout=0.1)


def test_a_partition_paused_then_revoked_and_assigned_again_is_read(
    transport: Transport,
) -> None:
    """Pause both partitions, let a second member come and go, then every record is read."""
    topic = f"pause-rebalance-{uuid.uuid4().hex[:8]}"
    transport.create_topics([topic], partitions=2)
    both = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    group = f"g-{uuid.uuid4().hex[:8]}"
    a = transport.consumer(group)
    b = transport.consumer(group)
    producer = transport.producer()
    try:
        a.subscribe([topic])
        _poll_until([a], lambda: set(a.assignment()) == both, "assignment of both partitions")
        a.pause(sorted(both))  # a worker backing off
        b.subscribe([topic])
        _poll_until([a, b], lambda: bool(b.assignment()), "second member's assignment")
        b.close()
        _poll_until([a], lambda: set(a.assignment()) == both, "reassignment of both partitions")
        keys = _one_key_per_partition(2)
        for key in keys:
            for n in range(3):
                producer.publish(topic, b"%s-%d" % (key, n), key=key)
        producer.flush(10)
        records: list[Record] = []
        deadline = time.monotonic() + BOUND
        while len(records) < 6 and time.monotonic() < deadline:
            records.extend(a.poll(timeout=0.2))
        assert sorted(r.partition for r in records) == [0, 0, 0, 1, 1, 1]
    finally:
        producer.close()
        a.close()
