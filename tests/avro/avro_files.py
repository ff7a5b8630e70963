"""Build Avro object container files byte by byte, hostile ones included (test helper)."""

from __future__ import annotations

import json
import zlib
from typing import Any

from choreo.tracker.sources import EXPORT_SCHEMA

SYNC = bytes(range(16))


def zigzag(n: int) -> bytes:
    """Return the Avro varint of ``n`` (any size, like a hostile writer would)."""
    value = (n << 1) ^ (n >> 63) if -(2**63) <= n < 2**63 else n << 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def avro_bytes(data: bytes) -> bytes:
    """Return ``data`` as an Avro ``bytes`` value (length, then the bytes)."""
    return zigzag(len(data)) + data


def header(schema: Any, *, codec: bytes = b"null", sync: bytes = SYNC) -> bytes:
    """Return a container header holding ``schema`` (JSON value or text) and ``codec``."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    entries = {b"avro.schema": text.encode(), b"avro.codec": codec}
    body = b"".join(avro_bytes(k) + avro_bytes(v) for k, v in entries.items())
    return b"Obj\x01" + zigzag(len(entries)) + body + zigzag(0) + sync


def block(count: int, data: bytes, *, deflate: bool = False, sync: bytes = SYNC) -> bytes:
    """Return one block claiming ``count`` objects in ``data`` (deflated when asked)."""
    if deflate:
        compressor = zlib.compressobj(wbits=-15)
        data = compressor.compress(data) + compressor.flush()
    return zigzag(count) + zigzag(len(data)) + data + sync


def exported_record(index: int) -> bytes:
    """Return the Avro body of one ExportedRecord (topic t, headers h=v)."""
    return (
        avro_bytes(b"t")
        + zigzag(0)
        + zigzag(index)
        + zigzag(1_700_000_000_000 + index)
        + zigzag(1)
        + avro_bytes(b"k%d" % index)
        + zigzag(1)
        + avro_bytes(b"v%d" % index)
        + zigzag(1)
        + avro_bytes(b"h")
        + avro_bytes(b"v")
        + zigzag(0)
    )


def export_file(records: int, *, deflate: bool = True) -> bytes:
    """Return a well-formed export file of ``records`` records in one block."""
    data = b"".join(exported_record(i) for i in range(records))
    codec = b"deflate" if deflate else b"null"
    return header(EXPORT_SCHEMA, codec=codec) + block(records, data, deflate=deflate)
