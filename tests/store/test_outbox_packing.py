"""The outbox's packed batch format: exact round trips, the earlier layout, broken blobs."""

from __future__ import annotations

import struct

import pytest

from choreo.errors import DecodeError
from choreo.store.outbox import OutboxRecord, pack_records, unpack_records


def _records() -> list[OutboxRecord]:
    return [
        OutboxRecord(
            "0b6c2a4e-4a55-5c11-9f3b-8a1e2d3c4b5a",
            "shop.ItemReserved",
            b"order-1",
            b"\x00\x01avro",
            [("choreo-type", b"shop.ItemReserved"), ("traceparent", b"00-ab-cd-01")],
        ),
        OutboxRecord("dl-\u00e9t\u00e9", "t\u00fcpic", None, None, []),  # non-ASCII, no key/value
        OutboxRecord("id-3", "t", b"", b"", [("h\u00e9", b""), ("x", b"\xff" * 3)]),
    ]


def _v1_blob(records: list[OutboxRecord]) -> bytes:
    """Pack ``records`` in the row-by-row layout of earlier versions (rows left in outboxes)."""
    parts: list[bytes] = []
    lengths: list[int] = []
    for record_id, topic, key, value, headers in records:
        ident, name = record_id.encode(), topic.encode()
        lengths += [
            len(ident),
            len(name),
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            len(headers),
        ]
        parts += [ident, name, *(p for p in (key, value) if p is not None)]
        for header, data in headers:
            lengths += [len(header.encode()), len(data)]
            parts += [header.encode(), data]
    head = struct.pack(f">II{len(lengths)}i", len(records), len(lengths), *lengths)
    return head + b"".join(parts)


def test_round_trip_is_exact() -> None:
    """Ids, topics, None and empty keys and values, header order and bytes all come back."""
    records = _records()
    assert unpack_records(pack_records(records)) == records
    assert unpack_records(pack_records([])) == []


def test_rows_of_the_earlier_layout_are_still_read() -> None:
    """An outbox row written by a previous version is published after an upgrade."""
    records = _records()
    assert unpack_records(_v1_blob(records)) == records


@pytest.mark.parametrize("cut", [1, 7, 20, 60])
def test_a_truncated_blob_is_a_decode_error(cut: int) -> None:
    """A blob that ends early never yields records (nor raises anything but DecodeError)."""
    blob = pack_records(_records())
    with pytest.raises(DecodeError):
        unpack_records(blob[:-cut])


def test_trailing_bytes_and_huge_counts_are_decode_errors() -> None:
    """Bytes after the last column, or a count larger than the blob can hold, are refused."""
    blob = pack_records(_records())
    with pytest.raises(DecodeError):
        unpack_records(blob + b"x")
    with pytest.raises(DecodeError):
        unpack_records(blob[:4] + struct.pack("<II", 10**9, 0) + blob[12:])


def test_a_header_that_is_not_a_pair_is_refused() -> None:
    """A header of one or three parts raises instead of shifting every later name and value."""
    odd: list[tuple[str, bytes]] = [("a", b"1"), ("b", b"2", b"3")]  # type: ignore[list-item]
    with pytest.raises(ValueError, match="pair"):
        pack_records([OutboxRecord("i", "t", None, None, odd)])


def test_the_layout_is_unchanged() -> None:
    """A packed batch has the bytes earlier versions wrote (rows stay readable both ways)."""
    blob = pack_records(_records()[:1])
    assert blob[:4] == b"\xffCB2"
    assert struct.unpack_from("<II", blob, 4) == (1, 2)
    names_and_values = b"choreo-typetraceparentshop.ItemReserved00-ab-cd-01"
    assert blob.endswith(names_and_values)
