"""Generate the object encoder of a flat record: each field's bytes, joined once.

A flat record is one whose fields are all strings, ints, longs, booleans, floats or
doubles: the common event. For it, :func:`~choreo.avro.compiler.compile_object_encoder`
emits the same checks and writes the same bytes as the general generated code
(:class:`~choreo.avro.gen_encoder.EncoderGen`), but the varint of a short string's
length or of a small int comes from a table, a longer one from :func:`varint_bytes`, and
the payload is one ``bytes.join`` of the parts instead of appends to a growing
``bytearray``. Values that do not fit fail at the same check with the same exception
type, so the caller's error handling (and message) is unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from choreo.avro.codesource import INT_RANGE, LONG_RANGE, Source, zigzag_bytes
from choreo.avro.model import Field, Primitive, Schema

__all__ = ["FLAT_KINDS", "emit_flat_fields", "is_flat", "varint_bytes"]

FLAT_KINDS = frozenset({"string", "int", "long", "boolean", "float", "double"})
"""The field types a flat record's fields may have."""

_SMALL = 64  # lengths 0-63 and ints -64..63 have a one-byte varint, taken from a table
_TWO = 8192  # ints -8192..8191 have a two-byte zig-zag varint
_LENGTHS = tuple(zigzag_bytes(n) for n in range(_SMALL))  # varint of a length n (2n)
_INTS = tuple(zigzag_bytes(n) for n in range(-_SMALL, _SMALL))  # zig-zag varint of n


_ONE_BYTE = tuple(bytes((n,)) for n in range(128))
_pack_two = struct.Struct("<H").pack


def varint_bytes(value: int) -> bytes:
    """Return the Avro varint of the already zig-zagged, non-negative ``value``."""
    if value < 16384:  # one or two bytes: the common lengths and amounts, without a loop
        return _ONE_BYTE[value] if value < 128 else _pack_two(value & 127 | 128 | value >> 7 << 8)
    out = bytearray()
    while value > 127:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def is_flat(schema: Schema, fields: Sequence[Field]) -> bool:
    """Return whether every field of a record has one of :data:`FLAT_KINDS` as its type."""
    for field in fields:
        node = schema.resolve(field.type)
        if not isinstance(node, Primitive) or node.kind not in FLAT_KINDS:
            return False
    return True


def emit_flat_fields(src: Source, schema: Schema, reads: Sequence[tuple[Field, str]]) -> None:
    """Emit the code (at indent 2) setting ``out`` to ``_P`` + the body of a flat record.

    ``reads`` pairs each field with the expression reading its value (in field order).
    """
    src.namespace.update(
        _LEN=_LENGTHS, _INT=_INTS, _varint=varint_bytes, _join=b"".join, _pack_two=_pack_two
    )
    e = src.emit
    parts = ["_P"]
    for field, read in reads:
        node = schema.resolve(field.type)
        assert isinstance(node, Primitive)
        kind = node.kind
        f, h = src.var("f"), src.var("h")
        if kind == "string":  # the value itself is not needed after its encoding
            s, n = src.var("s"), src.var("n")
            e(2, f"{s} = ({read}).encode()")
            e(2, f"{n} = len({s})")
            e(2, f"{h} = _LEN[{n}] if {n} < {_SMALL} else _varint({n} << 1)")
            parts += (h, s)
            continue
        e(2, f"{f} = {read}")
        if kind in ("int", "long"):
            # a small value needs no range check; any value fails where it did with it
            low, high = INT_RANGE if kind == "int" else LONG_RANGE
            e(2, f"if {-_SMALL} <= {f} < {_SMALL}:")
            e(3, f"{h} = _INT[{f} + {_SMALL}]")
            e(2, f"elif {-_TWO} <= {f} < {_TWO}:")  # a two-byte varint, inline
            e(3, f"{h} = ({f} << 1) ^ ({f} >> 63)")
            e(3, f"{h} = _pack_two({h} & 127 | 128 | {h} >> 7 << 8)")
            e(2, f"elif {low} <= {f} <= {high}:")
            e(3, f"{h} = _varint(({f} << 1) ^ ({f} >> 63))")
            e(2, "else:")
            e(3, f"raise _DatumMismatchError({src.const(f'{kind} out of range', 'M')}, {f})")
        elif kind == "boolean":
            e(2, f"if {f} is True:")
            e(3, f"{h} = b'\\x01'")
            e(2, f"elif {f} is False:")
            e(3, f"{h} = b'\\x00'")
            e(2, "else:")
            e(3, f"raise _DatumMismatchError({src.const('expected a boolean', 'M')}, {f})")
        else:
            e(2, f"{h} = {'_pack_f' if kind == 'float' else '_pack_d'}({f})")
        parts.append(h)
    e(2, f"out = _join(({', '.join(parts)},))")
