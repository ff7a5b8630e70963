"""Kafka's default key partitioner (murmur2), so the memory bus places keys like Kafka.

The Java client, kafka-python and librdkafka's ``murmur2_random`` partitioner all map a
non-null key to ``(murmur2(key) & 0x7fffffff) % partitions``. Using the same function in
memory means a saga's events land in the same partition number on every transport.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["murmur2", "partition_for"]

_MASK32: Final = 0xFFFFFFFF
_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995
_R: Final = 24


def murmur2(data: bytes) -> int:
    """Return Kafka's 32-bit murmur2 hash of ``data`` as an unsigned int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    words = length >> 2
    for word in struct.unpack_from(f"<{words}I", data):
        k = (word * _M) & _MASK32
        k ^= k >> _R
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = length & 3
    base = words << 2
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """Return the partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
