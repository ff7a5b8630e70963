"""How the memory bus stores records: plain tuples in, equal ``Record`` objects out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from choreo.errors import ConfigurationError, DeliveryError
from choreo.transports.base import Record, make_record, make_records
from choreo.transports.memory import MemoryBus, MemoryTransport
from choreo.transports.memory.bus import HEADER_ALLOWANCE
from choreo.transports.partitioner import partition_for

HEADERS = st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=4).map(tuple)


@given(
    topic=st.text(min_size=1, max_size=10),
    partition=st.integers(min_value=0, max_value=99),
    offset=st.integers(min_value=0, max_value=2**40),
    key=st.none() | st.binary(max_size=16),
    value=st.none() | st.binary(max_size=16),
    headers=HEADERS,
    stamp=st.integers(min_value=-1, max_value=2**42),
)
def test_the_fast_record_builder_builds_a_real_equal_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[tuple[str, bytes], ...],
    stamp: int,
) -> None:
    """make_record returns an immutable Record equal (and hashing equal) to Record(...)."""
    fields = (topic, partition, offset, key, value, headers, stamp)
    built = make_record(*fields)
    assert type(built) is Record
    assert built == Record(*fields)
    assert hash(built) == hash(Record(*fields))
    with pytest.raises(AttributeError):
        built.offset = 1  # type: ignore[misc]


@given(
    stored=st.lists(
        st.tuples(
            st.none() | st.binary(max_size=8),
            st.none() | st.binary(max_size=8),
            HEADERS,
            st.integers(min_value=-1, max_value=2**42),
        ),
        max_size=5,
    ),
    offset=st.integers(min_value=0, max_value=2**40),
)
def test_make_records_builds_real_records_at_consecutive_offsets(
    stored: list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...], int]],
    offset: int,
) -> None:
    """make_records returns what Record(...) returns for each stored field tuple, in order."""
    built = make_records("t", 3, offset, stored)
    assert built == [Record("t", 3, offset + n, *fields) for n, fields in enumerate(stored)]
    assert all(type(record) is Record for record in built)


def test_polled_records_carry_topic_partition_offset_and_timestamp() -> None:
    """Records are built at poll time with their place in the log and the publish time."""
    bus = MemoryBus(default_partitions=2)
    transport = MemoryTransport(bus)
    producer = transport.producer()
    keys = [f"k{n}".encode() for n in range(6)]
    for key in keys:
        producer.publish("t", key + b"!", key=key, headers=[("h", key)])
    consumer = transport.consumer("g")
    consumer.subscribe(["t"])
    polled = consumer.poll(10, 0.0) + consumer.poll(10, 0.0)
    assert sorted(r.key or b"" for r in polled) == keys
    for record in polled:
        assert record.partition == partition_for(record.key or b"", 2)
        assert record.value == (record.key or b"") + b"!"
        assert record.headers == (("h", record.key),)
        assert record.timestamp_ms > 0
        assert record == bus.records("t", record.partition)[record.offset]
    assert [r.key for r in bus.records("t")] == keys  # publication order across partitions


def test_a_one_partition_topic_keeps_publication_order_and_offsets() -> None:
    """Keys are not hashed for one partition, and offsets count up from zero."""
    bus = MemoryBus()
    producer = MemoryTransport(bus).producer()
    for n in range(5):
        producer.publish("solo", str(n).encode(), key=b"same" if n % 2 else None)
    records = bus.records("solo")
    assert [(r.partition, r.offset, r.value) for r in records] == [
        (0, n, str(n).encode()) for n in range(5)
    ]
    assert bus.records("solo", 0) == records


def test_the_memory_transport_accepts_an_instance_id() -> None:
    """A static member id is kept on the consumer; an empty one is refused."""
    transport = MemoryTransport()
    consumer = transport.consumer("g", instance_id="pod-0")
    assert consumer.instance_id == "pod-0"
    assert transport.consumer("g").instance_id is None
    with pytest.raises(ConfigurationError, match="instance_id"):
        transport.consumer("g", instance_id="")


_BIG = b"x" * (HEADER_ALLOWANCE + 200)
OUTGOING = st.tuples(
    st.just("id"),
    st.sampled_from(["solo", "trio", "fresh", "bad topic!"]),
    st.none() | st.binary(max_size=8),
    st.none() | st.binary(max_size=8) | st.just(_BIG),
    HEADERS | HEADERS.map(list),
)


@given(batch=st.lists(OUTGOING, max_size=6) | st.lists(OUTGOING, max_size=1).map(lambda b: b * 4))
@example(batch=[("id", "solo", b"k", b"v", (("h", b"1"),))] * 3)  # the column path
@example(batch=[("id", "solo", b"k", b"v", [("h", b"1")])] * 3)  # headers to freeze
@example(batch=[("id", "solo", b"k", b"v", ()), ("id", "solo", b"k", _BIG, ())])
@example(batch=[("id", "solo", b"k", b"v", ()), ("id", "solo", None, None, ())])
@example(batch=[("id", "fresh", b"k", b"v", ())] * 2)
@example(batch=[("id", "trio", b"k", b"v", ())] * 2)
def test_publish_many_stores_and_refuses_what_publish_would_each(
    batch: list[tuple[str, str, bytes | None, bytes | None, Any]],
) -> None:
    """Any batch (one topic or several, missing or illegal topics, None keys and values,
    oversized records, headers as lists) is stored, and refused, as one publish per record;
    the one-topic batch that takes the column path included (the repeated single record).
    """
    outcomes = []
    for many in (False, True):
        bus = MemoryBus(max_message_bytes=HEADER_ALLOWANCE + 100)
        bus.create_topics(["solo"], partitions=1)
        bus.create_topics(["trio"], partitions=3)
        producer = MemoryTransport(bus).producer()
        if many:
            producer.publish_many(batch)
        else:
            for _, topic, key, value, headers in batch:
                producer.publish(topic, value, key=key, headers=headers)
        try:
            producer.flush()
            failure = ""
        except DeliveryError as exc:
            failure = str(exc)
        stored = {
            topic: [
                (r.partition, r.offset, r.key, r.value, r.headers, type(r.headers))
                for p in range(bus.partitions(topic))
                for r in bus.records(topic, p)
            ]
            for topic in bus.topics()
        }
        outcomes.append((stored, failure))
    assert outcomes[0] == outcomes[1]


def test_polled_records_from_the_middle_of_a_log_have_their_offsets() -> None:
    """A poll that starts after the first record builds records with the log's offsets."""
    bus = MemoryBus()
    transport = MemoryTransport(bus)
    transport.producer().publish_many([("i", "t", b"k", str(n).encode(), ()) for n in range(7)])
    consumer = transport.consumer("g")
    consumer.subscribe(["t"])
    first = consumer.poll(3, 0.0)
    rest = consumer.poll(10, 0.0)
    assert [(r.offset, r.value) for r in first + rest] == [(n, str(n).encode()) for n in range(7)]
    assert first + rest == bus.records("t")
    assert all(type(r) is Record and r.topic == "t" and r.partition == 0 for r in rest)
    consumer.close()
