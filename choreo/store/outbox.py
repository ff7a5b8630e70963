"""Outbox records: what a batch will publish, stored with the inbox in one local transaction.

An :class:`OutboxRecord` is a Kafka record waiting to be published (an emitted event or a
dead letter) plus the id it is stored under. :func:`pack_headers` and
:func:`unpack_headers` turn record headers into one compact blob for storage and back.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from choreo.errors import DecodeError

__all__ = ["OutboxRecord", "pack_headers", "unpack_headers"]

_COUNT = struct.Struct(">I")


class OutboxRecord(NamedTuple):
    """A record waiting in the outbox; ``id`` is unique (an event id or a dead-letter id)."""

    id: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> bytes:
    """Return ``headers`` as one blob: a count, the names' and values' lengths, then both."""
    names = [name.encode() for name, _ in headers]
    values = [value for _, value in headers]
    count = len(names)
    lengths = struct.pack(f">I{2 * count}I", count, *map(len, names), *map(len, values))
    return lengths + b"".join(names) + b"".join(values)


def unpack_headers(blob: bytes) -> list[tuple[str, bytes]]:
    """Return the headers packed by :func:`pack_headers`; raise DecodeError if it is broken."""
    try:
        (count,) = _COUNT.unpack_from(blob, 0)
        lengths = struct.unpack_from(f">{2 * count}I", blob, _COUNT.size)
        position = _COUNT.size + 8 * count
        parts: list[bytes] = []
        for length in lengths:
            parts.append(blob[position : position + length])
            position += length
        if position != len(blob):
            raise DecodeError("packed headers have a wrong length", raw=blob)
        return [(parts[i].decode(), parts[count + i]) for i in range(count)]
    except (struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"packed headers are broken: {exc}", raw=blob) from exc
