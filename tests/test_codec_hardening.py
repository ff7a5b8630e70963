"""Tests of decoding untrusted bytes: only DecodeError, no hang, no silent misreads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreo.avro import LocalSchemaRegistry, load_directory
from choreo.avro.codec import SingleObjectCodec
from choreo.errors import DecodeError

REPO = Path(__file__).resolve().parent.parent

RICH = {
    "type": "record",
    "name": "Rich",
    "namespace": "t",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "n", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 2}},
        {"name": "opt", "type": ["null", "string"]},
        {"name": "nums", "type": {"type": "array", "items": "long"}},
        {"name": "nulls", "type": {"type": "array", "items": "null"}},
        {"name": "m", "type": {"type": "map", "values": "int"}},
    ],
}
DATUM: dict[str, Any] = {
    "flag": True,
    "n": -5,
    "big": 2**40,
    "f": 1.5,
    "d": -2.25,
    "s": "héllo",
    "b": b"\x00\xff",
    "e": "B",
    "fx": b"ab",
    "opt": "x",
    "nums": [1, -2, 3],
    "nulls": [None, None],
    "m": {"k": 1, "j": -1},
}


def zz(value: int) -> bytes:
    """Return the zig-zag varint encoding of ``value``."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(text: bytes) -> bytes:
    """Return an Avro string/bytes body."""
    return zz(len(text)) + text


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    """A codec knowing the Rich test schema and the example domain."""
    registry = load_directory(REPO / "schemas")
    registry.register(RICH)
    return SingleObjectCodec(registry)


@pytest.fixture(scope="module")
def header(codec: SingleObjectCodec) -> bytes:
    """The single-object header of t.Rich."""
    return codec.encode("t.Rich", DATUM)[:10]


def body(**parts: bytes) -> bytes:
    """Return a Rich body with some fields' encodings replaced."""
    fields = {
        "flag": b"\x01",
        "n": zz(-5),
        "big": zz(2**40),
        "f": b"\x00\x00\xc0\x3f",
        "d": b"\x00\x00\x00\x00\x00\x00\x02\xc0",
        "s": string("héllo".encode()),
        "b": string(b"\x00\xff"),
        "e": zz(1),
        "fx": b"ab",
        "opt": zz(1) + string(b"x"),
        "nums": zz(3) + zz(1) + zz(-2) + zz(3) + zz(0),
        "nulls": zz(2) + zz(0),
        "m": zz(2) + string(b"k") + zz(1) + string(b"j") + zz(-1) + zz(0),
    }
    fields.update(parts)
    return b"".join(fields.values())


def test_handmade_body_matches_encoder(codec: SingleObjectCodec, header: bytes) -> None:
    """The test's hand-made encoding is what the codec writes (so the cases below are exact)."""
    assert codec.encode("t.Rich", DATUM) == header + body()
    assert codec.decode(header + body(), "t.Rich") == DATUM


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ({"flag": b"\x02"}, "boolean byte other than 0 or 1"),
        ({"n": zz(2**31)}, "int out of 32-bit range"),
        ({"big": b"\xff" * 10 + b"\x01"}, "varint longer than 10 bytes"),
        ({"big": b"\xff" * 9 + b"\x7f"}, "varint overflows 64 bits"),
        ({"s": zz(-3) + b"abc"}, "length out of range"),
        ({"s": zz(1000) + b"abc"}, "length out of range"),
        ({"s": string(b"\xff\xfe")}, "invalid UTF-8"),
        ({"s": string(b"\xed\xa0\x80")}, "invalid UTF-8"),  # an encoded surrogate
        ({"e": zz(2)}, "enum index out of range"),
        ({"e": zz(-1)}, "enum index out of range"),
        ({"opt": zz(2)}, "union index out of range"),
        ({"opt": zz(-1) + string(b"x")}, "union index out of range"),
        ({"nums": zz(2**62)}, "collection longer than the remaining bytes"),
        ({"nums": zz(-2) + zz(5) + zz(1) + zz(2) + zz(0)}, "block size does not match"),
        ({"nums": zz(-2) + zz(10**6)}, "block size out of range"),
        ({"nulls": zz(2**62)}, "too many items of a zero-byte type"),
        ({"m": zz(2**40) + string(b"k")}, "collection longer than the remaining bytes"),
        ({"m": zz(1) + string(b"\xc3") + zz(1) + zz(0)}, "invalid UTF-8"),
    ],
)
def test_invalid_bodies_are_rejected(
    codec: SingleObjectCodec, header: bytes, parts: dict[str, bytes], reason: str
) -> None:
    """Each kind of invalid body raises DecodeError with its reason, never a wrong value."""
    data = header + body(**parts)
    with pytest.raises(DecodeError, match=reason) as caught:
        codec.decode(data, "t.Rich")
    assert caught.value.raw == data


def test_negative_block_counts_with_sizes_are_valid(
    codec: SingleObjectCodec, header: bytes
) -> None:
    """Blocks written with a negative count and a byte size (valid Avro) decode."""
    nums = zz(-2) + zz(2) + zz(1) + zz(-2) + zz(1) + zz(3) + zz(0)
    assert codec.decode(header + body(nums=nums), "t.Rich")["nums"] == [1, -2, 3]


def test_non_minimal_varints_are_accepted(codec: SingleObjectCodec, header: bytes) -> None:
    """A varint padded with continuation bytes (up to 10 bytes) is valid and decodes."""
    assert codec.decode(header + body(n=b"\x89\x80\x00"), "t.Rich")["n"] == -5


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:5], "shorter than the header"),
        (lambda d: b"\xc3\x02" + d[2:], "not single-object encoded"),
        (lambda d: d[:2] + b"\x01" * 8 + d[10:], "unknown schema fingerprint"),
        (lambda d: b"", "shorter than the header"),
    ],
)
def test_framing_errors(codec: SingleObjectCodec, mutate: Any, reason: str) -> None:
    """Wrong marker, unknown fingerprint, truncation and trailing bytes raise DecodeError."""
    with pytest.raises(DecodeError, match=reason):
        codec.decode(mutate(codec.encode("t.Rich", DATUM)), "t.Rich")


def test_size_cap_rejects_before_decoding() -> None:
    """Input above max_size is rejected without looking at it."""
    registry = LocalSchemaRegistry()
    registry.register(RICH)
    small = SingleObjectCodec(registry, max_size=16)
    with pytest.raises(DecodeError, match="exceeds 16"):
        small.decode(b"\xc3\x01" + b"\x00" * 100, "t.Rich")


def test_zero_size_item_cap_is_configurable(header: bytes) -> None:
    """The cap on null items is configurable and counts across blocks."""
    registry = LocalSchemaRegistry()
    registry.register(RICH)
    strict = SingleObjectCodec(registry, max_zero_size_items=3)
    assert strict.decode(header + body(nulls=zz(3) + zz(0)), "t.Rich")["nulls"] == [None] * 3
    with pytest.raises(DecodeError, match="zero-byte"):
        strict.decode(header + body(nulls=zz(2) + zz(2) + zz(0)), "t.Rich")


FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = [
    ("t.Rich", DATUM),
    ("t.Rich", {**DATUM, "opt": None, "nums": [], "m": {}, "nulls": []}),
    (
        "shop.orders.OrderCreated",
        {
            "order_id": "o-1",
            "customer_id": "c",
            "total_cents": 10,
            "currency": "EUR",
            "created_at": 1_700_000_000_000,
            "coupon_code": "C",
            "items": [{"sku": "s", "quantity": 1, "unit_price_cents": 10}] * 3,
        },
    ),
]


@st.composite
def mutated(draw: st.DrawFn, codec: SingleObjectCodec) -> tuple[str, bytes]:
    """Draw a valid encoding and apply bit flips, truncations, insertions and deletions."""
    name, datum = draw(st.sampled_from(SEEDS))
    data = bytearray(codec.encode(name, datum))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "byte"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif data:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    return name, bytes(data)


def check_decode(codec: SingleObjectCodec, name: str, data: bytes) -> None:
    """Decode ``data``: a DecodeError, or a value that encodes again under the reader."""
    try:
        value = codec.decode(data, name)
    except DecodeError as exc:
        assert exc.raw == data
        return
    assert isinstance(value, dict)
    codec.encode(name, value)  # what decoded is a valid datum of the schema


def test_fuzz_mutated_encodings(codec: SingleObjectCodec) -> None:
    """2000 mutated valid encodings either decode to valid datums or raise DecodeError."""

    @FUZZ
    @given(case=mutated(codec))
    def run(case: tuple[str, bytes]) -> None:
        check_decode(codec, *case)

    run()


def test_arbitrary_bytes_only_raise_decode_error(codec: SingleObjectCodec, header: bytes) -> None:
    """Arbitrary bytes, bare or behind a valid header, only ever raise DecodeError."""

    @settings(max_examples=500, deadline=None)
    @given(
        data=st.binary(max_size=200),
        framed=st.booleans(),
        reader=st.sampled_from(["t.Rich", "shop.orders.OrderCreated"]),
    )
    def run(data: bytes, framed: bool, reader: str) -> None:
        check_decode(codec, reader, header + data if framed else data)

    run()


def test_decode_any_is_hardened_too(codec: SingleObjectCodec, header: bytes) -> None:
    """decode_any applies the same validation as decode."""
    with pytest.raises(DecodeError, match="boolean"):
        codec.decode_any(header + body(flag=b"\x05"))
