"""Records consumed through confluent-kafka: headers as choreo's Record carries them."""

from __future__ import annotations

import time
import uuid

import confluent_kafka as ck
import pytest

from choreo.transports.base import Record
from choreo.transports.confluent import ConfluentTransport

from .kafka_settings import fast_config

pytestmark = pytest.mark.kafka


def test_headers_without_value_come_back_as_empty_bytes(kafka_bootstrap: str) -> None:
    """A null header value (foreign producers write them) becomes b""; the others stay as sent."""
    transport = ConfluentTransport(fast_config(kafka_bootstrap))
    topic = f"records-{uuid.uuid4().hex[:10]}"
    transport.create_topics([topic])
    raw = ck.Producer({"bootstrap.servers": kafka_bootstrap})
    sent = [
        [("a", b"1"), ("b", b"2")],
        [("a", None), ("b", b"2")],
        [("a", b""), ("b", b"2")],
        [("a", b""), ("b", None)],
    ]
    for headers in sent:
        raw.produce(topic, b"v", b"k", headers=headers)
    assert raw.flush(30) == 0
    consumer = transport.consumer(f"g-{uuid.uuid4().hex[:10]}")
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < len(sent) and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=0.2))
    finally:
        consumer.close()
        transport.close()
    assert [r.headers for r in records] == [
        (("a", b"1"), ("b", b"2")),
        (("a", b""), ("b", b"2")),
        (("a", b""), ("b", b"2")),
        (("a", b""), ("b", b"")),
    ]


def test_one_header_without_value_fills_only_its_record(kafka_bootstrap: str) -> None:
    """A batch's one null header value is filled; every record equals Record(...) and is frozen.

    The consumer tests the header values of a whole polled batch at once and builds records
    by filling a shell: this checks both against the dataclass's own constructor.
    """
    transport = ConfluentTransport(fast_config(kafka_bootstrap))
    topic = f"records-{uuid.uuid4().hex[:10]}"
    transport.create_topics([topic])
    raw = ck.Producer({"bootstrap.servers": kafka_bootstrap})
    count, bad = 40, 17
    for n in range(count):
        headers = [("n", str(n).encode()), ("x", None if n == bad else b"y")]
        raw.produce(topic, f"v{n}".encode(), None if n == 3 else f"k{n}".encode(), headers=headers)
    assert raw.flush(30) == 0
    consumer = transport.consumer(f"g-{uuid.uuid4().hex[:10]}")
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < count and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=0.2))
    finally:
        consumer.close()
        transport.close()
    assert [r.offset for r in records] == list(range(count))
    for n, record in enumerate(records):
        assert type(record) is Record
        expected_headers = (("n", str(n).encode()), ("x", b"" if n == bad else b"y"))
        assert record == Record(
            topic,
            0,
            n,
            None if n == 3 else f"k{n}".encode(),
            f"v{n}".encode(),
            expected_headers,
            record.timestamp_ms,
        )
        assert record.timestamp_ms > 0
        assert hash(record) == hash(Record(*(getattr(record, f) for f in Record.__slots__)))
        with pytest.raises(AttributeError):
            record.offset = 0  # type: ignore[misc]


def test_the_batch_test_tells_empty_values_from_absent_ones() -> None:
    """Only a header whose value is None counts as lacking one; b"" is a value."""
    from choreo.transports.confluent.consumer import _lacks_value

    assert not _lacks_value([("a", b"1"), ("b", b""), ("c", b"2")])
    assert _lacks_value([("a", b"1"), ("b", b""), ("c", None)])  # type: ignore[list-item]
    assert not _lacks_value([])
