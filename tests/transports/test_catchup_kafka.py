"""A catch-up read on the real broker stops at the ends taken at assignment, markers and all.

Both Kafka transports: a partition ending in a transaction's commit marker (a control
record no reader ever receives) is caught up by the consumer's position; a partition
with a transaction still open ends, for a ``read_committed`` reader, at its last stable
offset, so the read does not wait for that transaction; records written after the ends
were taken are not read.
"""

from __future__ import annotations

import time
import uuid

import confluent_kafka as ck
import pytest

from choreo.transports.base import TopicPartition
from choreo.transports.catchup import CatchUp, read_to_ends
from choreo.transports.factory import open_transport

pytestmark = pytest.mark.kafka


def _transactional(bootstrap: str, name: str) -> ck.Producer:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "transactional.id": name})
    producer.init_transactions(30)
    return producer


@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_the_read_stops_at_the_ends_past_markers_and_before_open_transactions(
    kafka_bootstrap: str, kind: str
) -> None:
    """Committed records and plain ones are read; the open transaction is not waited for."""
    topic = f"catchup-{uuid.uuid4().hex[:8]}"
    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    transport.create_topics([topic], partitions=2)
    committed = _transactional(kafka_bootstrap, f"{topic}-c")
    committed.begin_transaction()
    for n in range(3):
        committed.produce(topic, f"c{n}".encode(), partition=0)
    committed.commit_transaction(30)  # partition 0 now ends with a commit marker
    plain = ck.Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(2):
        plain.produce(topic, f"p{n}".encode(), partition=1)
    plain.flush(30)
    hanging = _transactional(kafka_bootstrap, f"{topic}-open")
    hanging.begin_transaction()
    hanging.produce(topic, b"open", partition=1)
    hanging.flush(30)  # written, not committed: partition 1's last stable offset is 2
    report = CatchUp()
    try:
        started = time.monotonic()
        values = [r.value for r in read_to_ends(transport, [topic], max_seconds=60, report=report)]
        took = time.monotonic() - started
    finally:
        hanging.abort_transaction(30)
        transport.close()
    assert sorted(v or b"" for v in values) == [b"c0", b"c1", b"c2", b"p0", b"p1"]
    assert report.ends == {TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 2}
    assert not report.timed_out and not report.by_idle and report.behind == set()
    assert took < 30  # not the transaction timeout, not max_seconds


@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_only_the_selected_partitions_are_read(kafka_bootstrap: str, kind: str) -> None:
    """A selection of partition 1: partition 0's records are neither read nor waited for."""
    topic = f"catchup-{uuid.uuid4().hex[:8]}"
    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    transport.create_topics([topic], partitions=2)
    producer = ck.Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(4):
        producer.produce(topic, f"v{n}".encode(), partition=n % 2)
    producer.flush(30)
    report = CatchUp()
    try:
        records = list(read_to_ends(
            transport, [topic], report=report,
            select=lambda assigned: [tp for tp in assigned if tp.partition == 1],
        ))
    finally:
        transport.close()
    assert sorted(r.value or b"" for r in records) == [b"v1", b"v3"]
    assert report.skipped == {TopicPartition(topic, 0)}
    assert report.ends == {TopicPartition(topic, 1): 2}
