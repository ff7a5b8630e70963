"""The container reader: export files read with choreo's bounded decoder, hostile ones refused.

fastavro is the oracle for well-formed files; crafted files (a recursive writer schema
that crashes fastavro's reader, a block claiming 2^31 objects, inflation bombs, forged
sizes) each raise a DecodeError naming the problem, within fixed memory.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import fastavro
import pytest
from avro_files import SYNC, avro_bytes, block, export_file, exported_record, header, zigzag

from choreo.avro.container import ContainerLimits, read_blocks
from choreo.errors import DecodeError
from choreo.tracker.sources import (
    ACCEPTED_EXPORT_SCHEMAS,
    EXPORT_SCHEMA,
    read_container_file,
    write_container_file,
)
from choreo.transports.base import Record


def read_all(data: bytes, **options: Any) -> list[Any]:
    """Return every datum of a container file given as bytes."""
    return [d for b in read_blocks(io.BytesIO(data), ACCEPTED_EXPORT_SCHEMAS, **options) for d in b]


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_reads_what_fastavro_writes(codec: str) -> None:
    """Files written by fastavro (several blocks) read back exactly as fastavro reads them."""
    records = [
        {
            "topic": f"t{i % 3}",
            "partition": i % 4,
            "offset": i,
            "timestamp": -1 if i % 5 == 0 else 1_700_000_000_000 + i,
            "key": None if i % 7 == 0 else f"k{i}".encode(),
            "value": None if i % 11 == 0 else bytes(range(i % 256)),
            "headers": [{"key": f"h{j}", "value": b"\xff" * j} for j in range(i % 3)],
        }
        for i in range(2000)
    ]
    out = io.BytesIO()
    fastavro.writer(
        out, fastavro.parse_schema(EXPORT_SCHEMA), records, codec=codec, sync_interval=4000
    )
    data = out.getvalue()
    blocks = list(read_blocks(io.BytesIO(data), ACCEPTED_EXPORT_SCHEMAS))
    assert len(blocks) > 3
    assert [d for b in blocks for d in b] == list(fastavro.reader(io.BytesIO(data))) == records


def test_export_roundtrip_through_the_tracker_reader(tmp_path: Path) -> None:
    """write_container_file then read_container_file gives the same records back."""
    records = [Record("t", 0, i, b"k", b"v", (("a", b"b"),), i) for i in range(10)]
    path = tmp_path / "log.avro"
    write_container_file(path, records)
    assert list(read_container_file(path)) == records


def test_the_export_schema_matches_by_canonical_form() -> None:
    """Docs, defaults and key order do not matter; the canonical form does."""
    reordered = json.loads(json.dumps(EXPORT_SCHEMA))
    reordered["doc"] = "written by another tool"
    reordered = dict(reversed(list(reordered.items())))
    data = header(reordered) + block(1, exported_record(0))
    assert read_all(data)[0]["topic"] == "t"


RECURSIVE = {
    "type": "record",
    "name": "ExportedRecord",
    "namespace": "choreo.export",
    "fields": [{"name": "next", "type": ["null", "choreo.export.ExportedRecord"]}],
}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (header(RECURSIVE) + block(1, b"\x02" * 100_000 + b"\x00"), "not one this reader"),
        (
            header({"type": "array", "items": "null"}) + block(1, zigzag(2**31) + b"\x00"),
            "not one this reader",
        ),
        (header(EXPORT_SCHEMA) + block(2**31, b"\x00" * 64), "2147483648 objects"),
        (header(EXPORT_SCHEMA) + zigzag(1) + zigzag(2**40) + b"\x00" * 64, "out of bounds"),
        (header(EXPORT_SCHEMA) + zigzag(-1) + zigzag(10) + b"\x00" * 64, "out of bounds"),
        (header(EXPORT_SCHEMA) + block(1, exported_record(0), sync=b"X" * 16), "sync marker"),
        (header(EXPORT_SCHEMA) + block(1, exported_record(0))[:-20], "truncated"),
        (header(EXPORT_SCHEMA) + block(1, exported_record(0) + b"\x00"), "does not match"),
        (header(EXPORT_SCHEMA) + block(2, exported_record(0)), "truncated body"),
        (header(EXPORT_SCHEMA, codec=b"snappy") + block(1, b"x"), "unsupported codec"),
        (header(EXPORT_SCHEMA, codec=b"deflate") + block(1, b"not deflate"), "corrupt deflate"),
        (header('{"type": "array", "items": ' * 30_000), "unreadable writer schema"),
        (header("not json"), "unreadable writer schema"),
        (b"Obj\x01" + zigzag(10**9), "entries"),
        (b"Obj\x01" + zigzag(1) + zigzag(2**40), "header over"),
        (b"Obj\x01" + zigzag(1) + avro_bytes(b"avro.schema") + zigzag(2**40), "header over"),
        (b"Obj\x01" + zigzag(1) + b"\xff" * 20, "varint longer"),
        (b"Obj\x01" + zigzag(0) + SYNC, "no avro.schema"),
        (b"PK\x03\x04 a zip file", "bad magic"),
        (b"", "bad magic"),
    ],
    ids=[
        "recursive-schema",
        "2^31-nulls",
        "2^31-objects",
        "huge-block",
        "negative-count",
        "bad-sync",
        "truncated-block",
        "trailing-bytes",
        "count-over-data",
        "snappy",
        "bad-deflate",
        "deep-schema-json",
        "schema-not-json",
        "header-entries",
        "header-key-size",
        "header-value-size",
        "long-varint",
        "no-schema",
        "zip",
        "empty",
    ],
)
def test_hostile_files_raise_decode_error(data: bytes, problem: str) -> None:
    """Each crafted file raises DecodeError naming its problem, never a crash."""
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=problem):
            read_all(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024 + 2 * len(data)


def test_inflation_bombs_stop_at_the_limit() -> None:
    """A small deflate block that inflates past max_inflated_bytes is refused."""
    bomb = zlib.compressobj(wbits=-15)
    stored = bomb.compress(b"\x00" * (64 << 20)) + bomb.flush()
    assert len(stored) < 100_000
    data = header(EXPORT_SCHEMA, codec=b"deflate") + zigzag(1) + zigzag(len(stored)) + stored + SYNC
    with pytest.raises(DecodeError, match="inflates to over 1048576 bytes"):
        read_all(data, limits=ContainerLimits(max_inflated_bytes=1 << 20))


def test_limits_apply_to_block_objects_and_sizes() -> None:
    """max_block_objects and max_block_bytes bound well-formed files too."""
    data = export_file(50)
    assert len(read_all(data)) == 50
    with pytest.raises(DecodeError, match="out of bounds"):
        read_all(data, limits=ContainerLimits(max_block_objects=10))
    with pytest.raises(DecodeError, match="out of bounds"):
        read_all(data, limits=ContainerLimits(max_block_bytes=16))


def test_the_tracker_reader_names_choreo_export(tmp_path: Path) -> None:
    """A recursive-schema file given to `--file` is refused as not written by choreo export."""
    path = tmp_path / "evil.avro"
    path.write_bytes(header(RECURSIVE) + block(1, b"\x02" * 1000 + b"\x00"))
    with pytest.raises(DecodeError, match="choreo export"):
        list(read_container_file(path))


def test_empty_blocks_are_read_as_empty() -> None:
    """A block of zero objects (legal, if unusual) reads as nothing, then reading goes on."""
    data = header(EXPORT_SCHEMA) + block(0, b"") + block(1, exported_record(4))
    assert [d["offset"] for d in read_all(data)] == [4]
