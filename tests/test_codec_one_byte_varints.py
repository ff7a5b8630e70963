"""The generated decoder's one-byte varints (a table per first byte) against the general rule.

Every first byte below 128 of an int, a long, a string length and a bytes length decodes
as the Avro rule says (zig-zag value; an odd length is negative and refused with the same
error as a length past the end), and the two-byte and longer forms still agree.
"""

from __future__ import annotations

import pytest

from choreo.avro.compiler import InvalidBodyError, compile_decoder

SCHEMA = {
    "type": "record",
    "name": "T",
    "fields": [
        {"name": "i", "type": "int"},
        {"name": "s", "type": "string"},
        {"name": "l", "type": "long"},
        {"name": "b", "type": "bytes"},
    ],
}


def _zigzag(raw: int) -> int:
    return (raw >> 1) ^ -(raw & 1)


def _varint(raw: int) -> bytes:
    out = bytearray()
    while raw > 0x7F:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


@pytest.mark.parametrize("raw", [*range(128), 128, 255, 8191, 16383, 16384, 2**31, 2**40])
def test_varints_decode_by_the_zigzag_rule(raw: int) -> None:
    decode = compile_decoder(SCHEMA)
    first = raw & 0xFFFF_FFFF  # the int field's varint (the long field takes raw)
    body = _varint(first) + b"\x00" + _varint(raw) + b"\x00"
    expected_int = _zigzag(first)
    if not -(2**31) <= expected_int < 2**31:
        with pytest.raises(InvalidBodyError):
            decode(body, 0)
        return
    assert decode(body, 0) == {"i": expected_int, "s": "", "l": _zigzag(raw), "b": b""}


@pytest.mark.parametrize("raw", [*range(128), 128, 129, 200, 201])
@pytest.mark.parametrize("field", ["s", "b"])
def test_lengths_take_that_many_bytes_and_odd_ones_are_refused(raw: int, field: str) -> None:
    decode = compile_decoder(SCHEMA)
    payload = b"x" * 150
    length = _varint(raw)
    if field == "s":
        body = b"\x00" + length + payload[: raw >> 1] + b"\x00\x00"
    else:
        body = b"\x00\x00\x00" + length + payload[: raw >> 1]
    if raw & 1:
        with pytest.raises(InvalidBodyError, match="length out of range"):
            decode(body, 0)
        return
    value = decode(body, 0)[field]
    assert value == (payload[: raw >> 1].decode() if field == "s" else payload[: raw >> 1])


@pytest.mark.parametrize("raw", [2, 4, 64, 126, 200])
def test_a_length_past_the_end_is_refused(raw: int) -> None:
    decode = compile_decoder(SCHEMA)
    body = b"\x00" + _varint(raw) + b"x" * ((raw >> 1) - 1)
    with pytest.raises(InvalidBodyError, match="length out of range"):
        decode(body, 0)


@pytest.mark.parametrize("field", ["i", "s", "l", "b"])
@pytest.mark.parametrize("cut", [b"\x80", b"\xff\xff", b""])
def test_a_varint_cut_short_is_refused_wherever_it_stops(field: str, cut: bytes) -> None:
    """A field's varint whose bytes stop before its last one (or absent) fails to decode.

    Each field is tried last in the body, so its varint is cut by the end of the input:
    after a first byte with the continuation bit, after two, or before any byte.
    """
    decode = compile_decoder(SCHEMA)
    before = {"i": b"", "s": b"\x00", "l": b"\x00\x00", "b": b"\x00\x00\x00"}[field]
    with pytest.raises((IndexError, InvalidBodyError)):
        decode(before + cut, 0)


@pytest.mark.parametrize("raw", [2**32, 2**32 + 1, 2**40])
def test_a_long_varint_out_of_the_int_range_names_the_int_range(raw: int) -> None:
    """A multi-byte int beyond 32 bits (either sign) is refused with the int's own message."""
    decode = compile_decoder(SCHEMA)
    with pytest.raises(InvalidBodyError, match="int out of 32-bit range"):
        decode(_varint(raw) + b"\x00\x00\x00", 0)


def test_a_long_takes_any_64_bit_value_and_refuses_a_longer_varint() -> None:
    """Longs read every zig-zag value of a 64-bit varint; an 11th byte is refused."""
    decode = compile_decoder(SCHEMA)
    for raw in (2**63 - 1, 2**64 - 1, 2**14, 2**21 + 5):
        assert decode(b"\x00\x00" + _varint(raw) + b"\x00", 0)["l"] == _zigzag(raw)
    with pytest.raises(InvalidBodyError, match="varint"):
        decode(b"\x00\x00" + b"\xff" * 10 + b"\x01\x00", 0)
