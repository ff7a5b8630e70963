"""Read Avro object container files from untrusted sources, with choreo's bounded decoder.

An object container file is ``Obj\\x01``, a metadata map (``avro.schema``, ``avro.codec``),
a 16-byte sync marker, then blocks: an object count, a byte size, that many bytes of
(possibly deflated) datums, and the sync marker again.

A file is data, not a schema source: its ``avro.schema`` is only *compared* with the
schemas the caller accepts (by Parsing Canonical Form, after a bounded parse), and the
datums are decoded with choreo's compiled decoder of the caller's own copy. fastavro's
reader is never handed the file's schema (a recursive one crashes it) and nothing is
allocated on the file's say-so beyond :class:`ContainerLimits`: the header's map, a
block's size and object count, and a block's inflated size are all bounded, and every
object must hold at least the fewest bytes its schema encodes to. Every problem raises
:class:`~choreo.errors.DecodeError` naming what is wrong.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from choreo.avro.codec import _DECODE_ERRORS, _decode_error
from choreo.avro.codesource import min_encoded_size
from choreo.avro.compiler import compile_decoder
from choreo.avro.jsonform import canonical_form
from choreo.avro.model import Schema
from choreo.avro.parse import as_schema
from choreo.errors import DecodeError, SchemaError

__all__ = ["MAGIC", "ContainerLimits", "read_blocks"]

MAGIC = b"Obj\x01"
_SYNC_SIZE = 16


@dataclass(frozen=True, slots=True)
class ContainerLimits:
    """Bounds on what a container file may make the reader allocate or loop over."""

    max_metadata_entries: int = 64
    max_metadata_bytes: int = 1 << 20
    """Total size of the header's keys and values (the schema is one of them)."""
    max_block_bytes: int = 64 << 20
    """Size of one block as stored (compressed)."""
    max_inflated_bytes: int = 256 << 20
    """Size of one block once inflated."""
    max_block_objects: int = 1 << 24


class _Stream:
    """Bounded reads from the file, failing with DecodeError on a short read."""

    def __init__(self, raw: BinaryIO, label: str) -> None:
        self.raw = raw
        self.label = label

    def fail(self, problem: str) -> DecodeError:
        return DecodeError(f"{self.label}: {problem}", None)

    def exactly(self, size: int, what: str) -> bytes:
        data = self.raw.read(size)
        if len(data) != size:
            raise self.fail(f"truncated {what}")
        return data

    def long(self, what: str) -> int:
        """Read one zig-zag varint (at most 10 bytes)."""
        value = shift = 0
        for _ in range(10):
            byte = self.raw.read(1)
            if not byte:
                raise self.fail(f"truncated {what}")
            value |= (byte[0] & 0x7F) << shift
            if byte[0] < 0x80:
                return (value >> 1) ^ -(value & 1)
            shift += 7
        raise self.fail(f"varint longer than 10 bytes in {what}")

    def at_end(self) -> bool:
        head = self.raw.read(1)
        if not head:
            return True
        self.raw.seek(-1, 1)
        return False


def _read_metadata(stream: _Stream, limits: ContainerLimits) -> dict[str, bytes]:
    if stream.raw.read(4) != MAGIC:
        raise stream.fail("not an Avro object container file (bad magic)")
    meta: dict[str, bytes] = {}
    budget = [limits.max_metadata_bytes]
    while True:
        count = stream.long("header")
        if count == 0:
            return meta
        if count < 0:
            count = -count
            stream.long("header")  # the block's byte size, implied by its entries
        if len(meta) + count > limits.max_metadata_entries:
            raise stream.fail(f"header has over {limits.max_metadata_entries} entries")
        for _ in range(count):
            key = _sized(stream, budget, limits.max_metadata_bytes)
            meta[key.decode("utf-8", "replace")] = _sized(stream, budget, limits.max_metadata_bytes)


def _sized(stream: _Stream, budget: list[int], limit: int) -> bytes:
    """Read one length-prefixed header string, charging it to the remaining ``budget``."""
    size = stream.long("header")
    if size < 0 or size > budget[0]:
        raise stream.fail(f"header over {limit} bytes")
    budget[0] -= size
    return stream.exactly(size, "header")


def _writer_schema(stream: _Stream, meta: dict[str, bytes]) -> Schema:
    text = meta.get("avro.schema")
    if text is None:
        raise stream.fail("header has no avro.schema")
    try:
        return as_schema(json.loads(text))
    except (ValueError, RecursionError, SchemaError) as exc:
        raise stream.fail(f"unreadable writer schema: {exc!s:.200}") from None


def _inflater(stream: _Stream, meta: dict[str, bytes], limit: int) -> Callable[[bytes], bytes]:
    codec = meta.get("avro.codec", b"null")
    if codec == b"null":
        return lambda data: data
    if codec != b"deflate":
        raise stream.fail(f"unsupported codec {codec[:40]!r}")

    def inflate(data: bytes) -> bytes:
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(data, limit + 1)
        except zlib.error as exc:
            raise stream.fail(f"corrupt deflate block: {exc}") from None
        if len(out) > limit:
            raise stream.fail(f"block inflates to over {limit} bytes")
        return out

    return inflate


def read_blocks(
    raw: BinaryIO,
    accepted: Sequence[Schema | Any],
    *,
    reader: Schema | Any | None = None,
    limits: ContainerLimits | None = None,
    label: str = "container file",
    refusal: str = "its writer schema is not one this reader accepts",
) -> Iterator[list[Any]]:
    """Yield the datums of each block of a container file (a seekable binary stream).

    The file's writer schema must have the Parsing Canonical Form of one of ``accepted``
    (self-contained schemas, models or JSON); its datums are then decoded with a decoder
    compiled for that accepted schema and ``reader`` (default: the accepted schema
    itself; pass today's schema when ``accepted`` also lists older compatible versions).
    Raises :class:`DecodeError` for any other file (``refusal`` says why), a truncated or
    corrupt one, or one over ``limits``; ``label`` names the file.
    """
    bounds = limits or ContainerLimits()
    stream = _Stream(raw, label)
    meta = _read_metadata(stream, bounds)
    sync = stream.exactly(_SYNC_SIZE, "header sync marker")
    found = canonical_form(_writer_schema(stream, meta))
    writer = next((s for s in map(as_schema, accepted) if canonical_form(s) == found), None)
    if writer is None:
        raise stream.fail(refusal)
    decode = compile_decoder(writer, as_schema(reader) if reader is not None else None, stream=True)
    smallest = max(1, min_encoded_size(writer))
    inflate = _inflater(stream, meta, bounds.max_inflated_bytes)
    while not stream.at_end():
        count, size = stream.long("block count"), stream.long("block size")
        if not 0 <= count <= bounds.max_block_objects or not 0 <= size <= bounds.max_block_bytes:
            raise stream.fail(f"block claims {count} objects in {size} bytes, out of bounds")
        stored = stream.exactly(size, "block")
        if stream.exactly(_SYNC_SIZE, "block sync marker") != sync:
            raise stream.fail("sync marker mismatch (corrupt block)")
        data = inflate(stored)
        if count * smallest > len(data):
            raise stream.fail(f"block claims {count} objects in {len(data)} bytes")
        yield _decode_block(stream, decode, data, count)


def _decode_block(stream: _Stream, decode: Any, data: bytes, count: int) -> list[Any]:
    out: list[Any] = []
    p = 0
    try:
        for _ in range(count):
            value, p = decode(data, p)
            out.append(value)
    except _DECODE_ERRORS as exc:
        raise stream.fail(_decode_error(exc, b"").args[0]) from None
    if p != len(data):
        raise stream.fail("block size does not match its objects")
    return out
