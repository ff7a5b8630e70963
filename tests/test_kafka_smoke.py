"""Smoke tests of the real broker with the raw Kafka clients (not choreo's transports).

confluent-kafka and kafka-python each read what the other wrote (keys, values, headers,
order per key), and a confluent-kafka transaction commits output records together with
the consumer's offsets while an aborted transaction stays invisible to read_committed.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka

RECORDS = 1000
KEYS = [f"saga-{index:02d}" for index in range(20)]
PARTITIONS = 3
DEADLINE_SECONDS = 60.0

Headers = tuple[tuple[str, bytes], ...]
Record = tuple[bytes, bytes, Headers]


def make_records(writer: str) -> list[Record]:
    """Return RECORDS keyed records whose value and headers carry the key's sequence number."""
    records: list[Record] = []
    next_seq: dict[str, int] = defaultdict(int)
    for index in range(RECORDS):
        key = KEYS[(index * 7) % len(KEYS)]
        seq = next_seq[key]
        next_seq[key] += 1
        value = json.dumps({"key": key, "seq": seq, "writer": writer}).encode()
        headers: Headers = (
            ("choreo-seq", str(seq).encode()),
            ("choreo-writer", writer.encode()),
            ("choreo-index", str(index).encode()),
        )
        records.append((key.encode(), value, headers))
    return records


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions and wait until the broker confirms."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new_topic = NewTopic(topic, num_partitions=partitions, replication_factor=1)
    admin.create_topics([new_topic])[topic].result(30)


def produce_confluent(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Write ``records`` with confluent-kafka (idempotent) and fail on any delivery error."""
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value, headers in records:
        producer.produce(
            topic, key=key, value=value, headers=list(headers), on_delivery=on_delivery
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []


def produce_kafka_python(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Write ``records`` with kafka-python (acks=all) and fail on any delivery error."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=list(headers))
            for key, value, headers in records
        ]
        producer.flush(30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


Received = list[tuple[int, Record]]


def consume_confluent(bootstrap: str, topic: str, group: str, count: int) -> Received:
    """Read ``count`` records of ``topic`` from the start with confluent-kafka."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: Received = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(received) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=1.0):
                assert message.error() is None, message.error()
                headers = tuple(message.headers() or ())
                received.append((message.partition(), (message.key(), message.value(), headers)))
    finally:
        consumer.close()
    return received


def consume_kafka_python(bootstrap: str, topic: str, group: str, count: int) -> Received:
    """Read ``count`` records of ``topic`` from the start with kafka-python."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: Received = []
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(received) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000, max_records=500).values():
                for record in batch:
                    headers = tuple((name, bytes(value)) for name, value in record.headers)
                    received.append((record.partition, (record.key, record.value, headers)))
    finally:
        consumer.close()
    return received


PRODUCERS: dict[str, Callable[[str, str, list[Record]], None]] = {
    "confluent": produce_confluent,
    "kafka_python": produce_kafka_python,
}
CONSUMERS: dict[str, Callable[[str, str, str, int], Received]] = {
    "confluent": consume_confluent,
    "kafka_python": consume_kafka_python,
}


@pytest.mark.parametrize(
    ("writer", "reader"),
    [("confluent", "kafka_python"), ("kafka_python", "confluent")],
    ids=["confluent-to-kafka_python", "kafka_python-to-confluent"],
)
def test_each_client_reads_what_the_other_wrote(
    kafka_bootstrap: str, unique_name: Callable[[str], str], writer: str, reader: str
) -> None:
    """Keyed records with headers from one client reach the other intact and in per-key order."""
    topic = unique_name(f"smoke-{writer}")
    create_topic(kafka_bootstrap, topic, PARTITIONS)
    sent = make_records(writer)

    PRODUCERS[writer](kafka_bootstrap, topic, sent)
    received = CONSUMERS[reader](kafka_bootstrap, topic, unique_name("smoke-group"), RECORDS)

    records = [record for _partition, record in received]
    assert len(records) == RECORDS
    assert sorted(records) == sorted(sent)
    partitions_per_key: dict[bytes, set[int]] = defaultdict(set)
    seqs_per_key: dict[bytes, list[int]] = defaultdict(list)
    for partition, (key, value, headers) in received:
        partitions_per_key[key].add(partition)
        seqs_per_key[key].append(json.loads(value)["seq"])
        assert dict(headers)["choreo-seq"] == str(json.loads(value)["seq"]).encode()
    assert all(len(partitions) == 1 for partitions in partitions_per_key.values())
    assert len({next(iter(p)) for p in partitions_per_key.values()}) > 1  # keys spread out
    for key, seqs in seqs_per_key.items():
        assert seqs == list(range(len(seqs))), key


def _read_values(bootstrap: str, topic: str, group: str, isolation: str, count: int) -> list[bytes]:
    """Return the values of the first ``count`` records of ``topic`` at an isolation level."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=100, timeout=1.0):
                assert message.error() is None, message.error()
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_confluent_transaction_commits_output_with_offsets_and_hides_aborts(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A committed transaction publishes records and offsets; an aborted one stays invisible."""
    source, sink = unique_name("tx-in"), unique_name("tx-out")
    group = unique_name("tx-group")
    create_topic(kafka_bootstrap, source, 1)
    create_topic(kafka_bootstrap, sink, 1)
    produce_confluent(
        kafka_bootstrap, source, [(b"order-1", f"in-{i}".encode(), ()) for i in range(10)]
    )

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("tx-id")}
    )
    try:
        consumer.subscribe([source])
        inputs: list[Any] = []
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(inputs) < 10 and time.monotonic() < deadline:
            inputs.extend(consumer.consume(num_messages=10, timeout=1.0))
        assert [m.value() for m in inputs] == [f"in-{i}".encode() for i in range(10)]

        producer.init_transactions(30)
        producer.begin_transaction()
        for message in inputs:
            producer.produce(sink, key=message.key(), value=b"out-" + message.value()[3:])
        positions = consumer.position(consumer.assignment())
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)

        committed = consumer.committed([TopicPartition(source, 0)], timeout=30)
        assert committed[0].offset == 10

        producer.begin_transaction()
        for i in range(5):
            producer.produce(sink, key=b"order-1", value=f"aborted-{i}".encode())
        assert producer.flush(30) == 0  # the records reach the log before the abort
        producer.abort_transaction(30)

        producer.begin_transaction()
        for i in range(3):
            producer.produce(sink, key=b"order-1", value=f"after-{i}".encode())
        producer.commit_transaction(30)
    finally:
        consumer.close()

    committed_view = _read_values(
        kafka_bootstrap, sink, unique_name("tx-committed"), "read_committed", 13
    )
    expected = [f"out-{i}".encode() for i in range(10)] + [f"after-{i}".encode() for i in range(3)]
    assert committed_view == expected

    uncommitted_view = _read_values(
        kafka_bootstrap, sink, unique_name("tx-uncommitted"), "read_uncommitted", 18
    )
    assert [v for v in uncommitted_view if v.startswith(b"aborted-")] == [
        f"aborted-{i}".encode() for i in range(5)
    ]
    assert len(uncommitted_view) == 18
