"""Outbox records: what a batch will publish, stored with the inbox in one local transaction.

An :class:`OutboxRecord` is a Kafka record waiting to be published (an emitted event or a
dead letter) plus the id it is stored under. :func:`pack_headers` and
:func:`unpack_headers` turn record headers into one compact blob for storage and back;
:func:`pack_records` and :func:`unpack_records` do the same for a whole batch of records
(a store that keeps one outbox row per batch).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Final, NamedTuple

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
    """Return ``records`` as one blob that :func:`unpack_records` reads back exactly.

    The layout is columnar so that packing a batch is a handful of C-level joins rather
    than a Python loop per header: a magic, the record and header counts, then 32-bit
    little-endian lengths (every record's id, topic, key and value length, -1 for a None
    key or value, and header count; every header's name and value length), then the ids,
    topics, keys, values, header names and header values, each column concatenated.

    A header that is not a (name, value) pair raises ValueError, one whose name is not a
    string or whose value is not bytes TypeError. (The pair check counts parts: a header
    of three parts followed by one of a single part, names and values still in step,
    would pass as two pairs. choreo builds every header as a pair.)
    """
    count = len(records)
    if not count:
        return _MAGIC + _HEAD.pack(0, 0)
    ids, topics, keys, values, headers = zip(*records, strict=True)
    # name, value, name, value, ...: slicing splits it in C (``zip(*pairs)`` would build
    # an iterator per header, the costliest step of the whole packing)
    flat = list(chain.from_iterable(chain.from_iterable(headers)))
    if len(flat) != 2 * sum(map(len, headers)):  # a header of one or three parts
        raise ValueError("a record header is not a (name, value) pair")
    names, datas = flat[0::2], flat[1::2]
    id_blob, id_lengths = _utf8_column(ids)
    topic_blob, topic_lengths = _utf8_column(topics)
    name_blob, name_lengths = _utf8_column(names)
    lengths = array(
        "i",
        [
            *id_lengths,
            *topic_lengths,
            *[-1 if key is None else len(key) for key in keys],
            *[-1 if value is None else len(value) for value in values],
            *map(len, headers),
            *name_lengths,
            *map(len, datas),
        ],
    )
    if _BIG_ENDIAN:
        lengths.byteswap()
    return b"".join(
        (
            _MAGIC,
            _HEAD.pack(count, len(names)),
            lengths.tobytes(),
            id_blob,
            topic_blob,
            b"".join([key for key in keys if key is not None]),
            b"".join([value for value in values if value is not None]),
            name_blob,
            b"".join(datas),
        )
    )


def _utf8_column(texts: Sequence[str]) -> tuple[bytes, Iterable[int]]:
    """Return ``texts`` encoded and concatenated, and each one's length in bytes."""
    joined = "".join(texts)
    if joined.isascii():  # the common case: one character, one byte
        return joined.encode(), map(len, texts)
    encoded = [text.encode() for text in texts]
    return b"".join(encoded), map(len, encoded)


_MAGIC: Final = b"\xffCB2"  # never the start of the first layout (its count is < 2**24)
_HEAD: Final = struct.Struct("<II")
_BIG_ENDIAN: Final = sys.byteorder == "big"


def unpack_records(blob: bytes) -> list[OutboxRecord]:
    """Return the records packed by :func:`pack_records`; raise DecodeError if it is broken.

    Also reads the row-by-row layout earlier versions wrote (rows a previous version left in
    an outbox are published after an upgrade).
    """
    if blob[:4] == _MAGIC:
        return _unpack_columns(blob)
    return _unpack_rows(blob)


def _unpack_columns(blob: bytes) -> list[OutboxRecord]:
    """Return the records of a blob in :func:`pack_records`'s columnar layout."""
    try:
        count, total = _HEAD.unpack_from(blob, 4)
        start = 4 + _HEAD.size
        if count > MAX_RECORDS or 5 * count + 2 * total > (len(blob) - start) // 4:
            raise DecodeError(f"packed records claim {count} records", raw=blob[:64])
        lengths = array("i")
        end = start + 4 * (5 * count + 2 * total)
        lengths.frombytes(blob[start:end])
        if _BIG_ENDIAN:
            lengths.byteswap()
        cut = _Cutter(blob, end)
        ids = cut.texts(lengths[0:count])
        topics = cut.texts(lengths[count : 2 * count])
        keys = cut.optional(lengths[2 * count : 3 * count])
        values = cut.optional(lengths[3 * count : 4 * count])
        header_counts = lengths[4 * count : 5 * count]
        if min(header_counts, default=0) < 0 or sum(header_counts) != total:
            raise DecodeError("packed records have wrong header counts", raw=blob[:64])
        names = cut.texts(lengths[5 * count : 5 * count + total])
        datas = cut.parts(lengths[5 * count + total :])
        if cut.position != len(blob):
            raise DecodeError("packed records have a wrong length", raw=blob[:64])
        pairs = list(zip(names, datas, strict=True))
        records: list[OutboxRecord] = []
        at = 0
        for record_id, topic, key, value, header_count in zip(
            ids, topics, keys, values, header_counts, strict=True
        ):
            records.append(
                OutboxRecord(record_id, topic, key, value, pairs[at : at + header_count])
            )
            at += header_count
        return records
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"packed records are broken: {exc}", raw=blob[:64]) from exc


class _Cutter:
    """Cuts consecutive parts of given lengths out of a blob, checking its bounds."""

    def __init__(self, blob: bytes, position: int) -> None:
        self.blob = blob
        self.position = position

    def parts(self, lengths: Sequence[int]) -> list[bytes]:
        """Return the next parts, one per length (each at least 0)."""
        if min(lengths, default=0) < 0:
            raise DecodeError("packed records have a negative length", raw=self.blob[:64])
        return [part or b"" for part in self.optional(lengths)]

    def optional(self, lengths: Sequence[int]) -> list[bytes | None]:
        """Return the next parts, None for a length of -1."""
        blob, position = self.blob, self.position
        out: list[bytes | None] = []
        for length in lengths:
            if length < 0:
                if length != -1:
                    raise DecodeError("packed records have a negative length", raw=blob[:64])
                out.append(None)
                continue
            end = position + length
            if end > len(blob):
                raise DecodeError("packed records end early", raw=blob[:64])
            out.append(blob[position:end])
            position = end
        self.position = position
        return out

    def texts(self, lengths: Sequence[int]) -> list[str]:
        """Return the next parts decoded as UTF-8."""
        return [part.decode() for part in self.parts(lengths)]


def _unpack_rows(blob: bytes) -> list[OutboxRecord]:
    """Return the records of a blob in the earlier row-by-row layout."""
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
