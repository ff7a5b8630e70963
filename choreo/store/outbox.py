"""Outbox records: what a batch will publish, stored with the inbox in one local transaction.

An :class:`OutboxRecord` is a Kafka record waiting to be published (an emitted event or a
dead letter) plus the id it is stored under. :func:`pack_headers` and
:func:`unpack_headers` turn record headers into one compact blob for storage and back;
:func:`pack_records` and :func:`unpack_records` do the same for a whole batch of records
(a store that keeps one outbox row per batch).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from choreo.errors import DecodeError

__all__ = ["OutboxRecord", "pack_headers", "pack_records", "unpack_headers", "unpack_records"]

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


MAX_RECORDS = 1_000_000
"""The most records :func:`unpack_records` accepts in one blob (a bound on what it allocates)."""


def pack_records(records: Sequence[OutboxRecord]) -> bytes:
    """Return ``records`` as one blob: a count, then lengths, then every field's bytes.

    Per record the lengths are id, topic, key and value (-1 for None) and the number of
    headers, then each header's name and value lengths.
    """
    parts: list[bytes] = []
    lengths: list[int] = []
    add_parts, add_lengths = parts.extend, lengths.extend
    names = _NAMES
    for record_id, topic, key, value, headers in records:
        ident, name = record_id.encode(), topic.encode()
        add_lengths(
            (
                len(ident),
                len(name),
                -1 if key is None else len(key),
                -1 if value is None else len(value),
                len(headers),
            )
        )
        add_parts((ident, name))
        if key is not None:
            parts.append(key)
        if value is not None:
            parts.append(value)
        for header, data in headers:
            encoded = names.get(header)
            if encoded is None:
                encoded = header.encode()
                if len(names) < _MAX_NAMES:
                    names[header] = encoded
            add_lengths((len(encoded), len(data)))
            add_parts((encoded, data))
    head = struct.pack(f">II{len(lengths)}i", len(records), len(lengths), *lengths)
    return head + b"".join(parts)


_NAMES: dict[str, bytes] = {}  # header names repeat on every record: encoded once
_MAX_NAMES = 1024


def unpack_records(blob: bytes) -> list[OutboxRecord]:
    """Return the records packed by :func:`pack_records`; raise DecodeError if it is broken."""
    try:
        count, total = struct.unpack_from(">II", blob, 0)
        if count > MAX_RECORDS or total > len(blob) // 4:
            raise DecodeError(f"packed records claim {count} records", raw=blob[:64])
        lengths = struct.unpack_from(f">{total}i", blob, 8)
        position = 8 + 4 * total
        at = 0  # the next length
        records: list[OutboxRecord] = []

        def take(length: int) -> bytes | None:
            nonlocal position
            if length < 0:
                return None
            end = position + length
            if end > len(blob):
                raise DecodeError("packed records end early", raw=blob[:64])
            part = blob[position:end]
            position = end
            return part

        for _ in range(count):
            ident, name, key_length, value_length, header_count = lengths[at : at + 5]
            at += 5
            record_id, topic = take(ident), take(name)
            key, value = take(key_length), take(value_length)
            headers = []
            for _ in range(header_count):
                header, data = take(lengths[at]), take(lengths[at + 1])
                at += 2
                headers.append(((header or b"").decode(), data or b""))
            records.append(
                OutboxRecord(
                    (record_id or b"").decode(), (topic or b"").decode(), key, value, headers
                )
            )
        if position != len(blob) or at != total:
            raise DecodeError("packed records have a wrong length", raw=blob[:64])
        return records
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"packed records are broken: {exc}", raw=blob[:64]) from exc
