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
