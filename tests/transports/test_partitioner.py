"""Kafka's murmur2 partitioner, checked against Kafka's own vectors and kafka-python."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from choreo.transports.partitioner import murmur2, partition_for

# From Apache Kafka's UtilsTest.testMurmur2 (signed 32-bit results of the Java client).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def _signed(value: int) -> int:
    """Return an unsigned 32-bit value as Java's signed int."""
    return value - (1 << 32) if value >= 1 << 31 else value


def test_murmur2_matches_the_java_clients_vectors() -> None:
    """murmur2 gives the Java client's results for Kafka's published test vectors."""
    assert {key: _signed(murmur2(key)) for key in JAVA_VECTORS} == JAVA_VECTORS


@given(st.binary(max_size=96), st.integers(min_value=1, max_value=64))
def test_partition_for_agrees_with_kafka_python(key: bytes, partitions: int) -> None:
    """partition_for picks the partition kafka-python's default partitioner picks."""
    expected = (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions
    assert partition_for(key, partitions) == expected
