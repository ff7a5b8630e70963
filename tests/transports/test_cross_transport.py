"""What one Kafka transport writes, the other reads: same partitions, headers and order."""

from __future__ import annotations

import time
import uuid

import pytest

from choreo.transports.base import Record, Transport
from choreo.transports.confluent import ConfluentTransport
from choreo.transports.kafka_python import KafkaPythonTransport
from choreo.transports.partitioner import partition_for

from .kafka_settings import fast_config

pytestmark = pytest.mark.kafka

PATIENCE = 30.0


def _transports(bootstrap: str) -> dict[str, Transport]:
    """Return both Kafka transports on the same broker."""
    config = fast_config(bootstrap)
    return {"confluent": ConfluentTransport(config), "kafka-python": KafkaPythonTransport(config)}


@pytest.mark.parametrize(
    ("writer", "reader"), [("confluent", "kafka-python"), ("kafka-python", "confluent")]
)
def test_records_written_by_one_client_are_read_by_the_other(
    kafka_bootstrap: str, writer: str, reader: str
) -> None:
    """Keys, values, headers, partitions and per-key order survive a change of client."""
    transports = _transports(kafka_bootstrap)
    topic = f"cross-{uuid.uuid4().hex[:10]}"
    transports[writer].create_topics([topic], partitions=3)
    producer = transports[writer].producer()
    sent = [(f"saga-{n % 4}".encode(), f"{n}".encode()) for n in range(20)]
    for key, value in sent:
        producer.publish(topic, value, key=key, headers=[("choreo-writer", writer.encode())])
    producer.flush(PATIENCE)
    producer.close()
    consumer = transports[reader].consumer(f"cross-{uuid.uuid4().hex[:10]}")
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + PATIENCE
    try:
        while len(records) < len(sent) and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=0.2))
    finally:
        consumer.close()
    assert sorted((r.key, r.value) for r in records) == sorted(sent)
    for record in records:
        assert record.key is not None
        assert record.partition == partition_for(record.key, 3)
        assert record.headers == (("choreo-writer", writer.encode()),)
    for key in {k for k, _ in sent}:
        got = [r.value for r in records if r.key == key]
        assert got == [v for k, v in sent if k == key]
