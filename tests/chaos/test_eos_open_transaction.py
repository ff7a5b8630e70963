"""A transaction an exactly-once producer leaves open never holds read_committed readers long.

An open transaction holds back the last stable offset (LSO) of every partition it wrote
to, and a ``read_committed`` consumer reads no further than that. These tests leave a
transaction open on a real broker of their own (one is frozen with SIGSTOP, which the
session's broker must never be) and measure how long the partition stays unstable.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import IsolationLevel
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from choreo.errors import TransactionError
from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentTransport
from tests.conftest import load_kafka_broker_module

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    """A broker of this module's own (the tests freeze it)."""
    instance = load_kafka_broker_module().KafkaBroker(port=0).start()
    try:
        yield instance
    finally:
        if instance.pid is not None:
            os.kill(instance.pid, signal.SIGCONT)
        instance.stop()


def _stable_and_end(admin: AdminClient, tp: KafkaPartition) -> tuple[int, int]:
    """Return the partition's (last stable offset, high watermark)."""
    found = []
    for isolation in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        futures = admin.list_offsets(
            {tp: OffsetSpec.latest()}, isolation_level=isolation, request_timeout=10
        )
        found.append(futures[tp].result(timeout=10).offset)
    return found[0], found[1]


def _seconds_until_stable(admin: AdminClient, tp: KafkaPartition, limit: float) -> float:
    """Return how long the partition's LSO took to reach its end (``limit`` + 1 if it did not)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        stable, end = _stable_and_end(admin, tp)
        if stable == end:
            return time.monotonic() - started
        time.sleep(0.2)
    return limit + 1


def _topic(admin: AdminClient) -> str:
    name = f"eos-open-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    return name


def test_a_producer_abandoned_in_a_hung_call_aborts_its_open_transaction(broker: Any) -> None:
    """A producer hung in ``send_offsets_to_transaction`` aborts its transaction as it closes.

    The broker is frozen (SIGSTOP) mid-transaction, so the call outlives its timeout and
    the producer is abandoned (fatal), as after the broker restart where librdkafka ignores
    the timeout. Once the broker answers again, closing the abandoned producer (what a
    worker does before it exits) fences it with a new client of the same transactional id:
    the coordinator aborts the open transaction at once, and the partition is stable
    within seconds instead of after ``transaction.timeout.ms`` or when a replacement
    starts. About 20 s: its own broker, and the hung call's bound (timeout + 5 s).
    """
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = _topic(admin)
    tp = KafkaPartition(topic, 0)
    transport = ConfluentTransport(KafkaConfig(bootstrap_servers=broker.bootstrap))
    consumer = transport.consumer(f"g-{topic}")
    producer = transport.producer(transactional_id=f"t-{topic}")
    try:
        consumer.subscribe([topic])
        consumer.poll(timeout=2.0)
        producer.begin_transaction()
        producer.publish(topic, b"left open")
        producer.flush(10)
        assert _stable_and_end(admin, tp) == (0, 1)  # the open transaction holds the LSO

        os.kill(broker.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TransactionError, match="did not return within") as hung:
                producer.send_offsets_to_transaction({TopicPartition(topic, 0): 1}, consumer, 1.0)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        assert hung.value.fatal
        assert _stable_and_end(admin, tp) == (0, 1)  # still open: nobody ended it

        producer.close()
        assert _seconds_until_stable(admin, tp, 10.0) < 10.0
        stable, end = _stable_and_end(admin, tp)
        assert stable == end == 2  # the record and the abort marker
    finally:
        producer.close()
        consumer.close()


def test_a_transaction_nobody_ends_is_aborted_by_the_broker_after_its_timeout(
    broker: Any,
) -> None:
    """A transaction whose producer never ends it is aborted within its timeout + 10 s.

    What bounds the wait of ``read_committed`` readers when a replica dies mid-transaction
    and no replacement with its transactional id starts (a replica lost for good): the
    coordinator aborts a transaction older than ``transaction.timeout.ms`` at its next
    check (``transaction.abort.timed.out.transaction.cleanup.interval.ms``, 10 s). Shown
    with a 2 s timeout (choreo's default is 30 s: the same mechanism, 28 s longer), so the
    test takes up to 12 s.
    """
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = _topic(admin)
    tp = KafkaPartition(topic, 0)
    config = KafkaConfig(
        bootstrap_servers=broker.bootstrap, producer={"transaction.timeout.ms": 2000}
    )
    producer = ConfluentTransport(config).producer(transactional_id=f"t-{topic}")
    try:
        producer.begin_transaction()
        producer.publish(topic, b"never ended")
        producer.flush(10)
        assert _stable_and_end(admin, tp) == (0, 1)
        # The producer now never ends its transaction, as if its process had died.
        assert _seconds_until_stable(admin, tp, 20.0) < 2.0 + 10.0 + 3.0
        assert _stable_and_end(admin, tp) == (2, 2)  # the record and the abort marker
    finally:
        producer.close()
