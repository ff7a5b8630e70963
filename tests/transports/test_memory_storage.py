"""How the memory bus stores records: plain tuples in, equal ``Record`` objects out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.errors import ConfigurationError
from choreo.transports.base import Record, make_record
from choreo.transports.memory import MemoryBus, MemoryTransport
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
