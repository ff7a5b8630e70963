"""What the generated encoders and decoders share: the source builder, limits, errors.

Generated source never embeds text from a schema: names, symbols, messages and defaults
are constants in the function's namespace, referred to by generated identifiers
(``_K3``), so a hostile schema cannot inject code. Before any source is generated, the
schema is measured (:func:`choreo.avro.lint.measure`, linear time) and refused when it
exceeds a :class:`CompileLimits` bound; the generated text is measured again before
Python compiles it.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from choreo.avro.lint import find_recursion, measure
from choreo.avro.model import Fixed, Node, Primitive, Record, Schema, Visitor
from choreo.errors import SchemaError

__all__ = [
    "PYTHON_MAX_COLLECTIONS",
    "CompileLimitError",
    "CompileLimits",
    "DatumMismatchError",
    "InvalidBodyError",
    "ResolutionError",
    "Source",
    "check_limits",
    "min_encoded_size",
    "zigzag_bytes",
]

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)

PYTHON_MAX_COLLECTIONS = 9
"""Most arrays and maps nested in one compiled codec: each adds two nested loops to the
generated code, and Python refuses more than 20 nested blocks in one function."""


class InvalidBodyError(Exception):
    """Raised by generated decoders on invalid input (turned into ``DecodeError``)."""


class DatumMismatchError(Exception):
    """Raised by generated encoders on a datum that does not fit the schema."""


class ResolutionError(SchemaError):
    """A writer schema cannot be resolved against a reader schema at all."""


class CompileLimitError(SchemaError):
    """A schema exceeds a :class:`CompileLimits` bound; the message names the limit."""


@dataclass(frozen=True, slots=True)
class CompileLimits:
    """Bounds checked before a codec is generated for a schema (foreign ones included).

    ``max_nodes``: types in the schema's full expansion (every use of a named type
    written out, as the compiled code inlines it); ``max_depth``: records, arrays and maps
    nested; ``max_collections``: arrays and maps nested (at most
    :data:`PYTHON_MAX_COLLECTIONS`); ``max_source_chars``: size of the generated source.
    """

    max_nodes: int = 5_000
    max_depth: int = 32
    max_collections: int = PYTHON_MAX_COLLECTIONS
    max_source_chars: int = 2_000_000


def check_limits(schema: Schema, limits: CompileLimits, role: str) -> None:
    """Raise :class:`SchemaError` when ``schema`` is recursive or exceeds ``limits``."""
    chain = find_recursion(schema)
    if chain:
        raise SchemaError(f"{role}: recursive schemas are not supported: " + " → ".join(chain))
    m = measure(schema)
    checks = (
        ("max_depth", m.depth, limits.max_depth, "nests {} levels"),
        (
            "max_collections",
            m.collections,
            min(limits.max_collections, PYTHON_MAX_COLLECTIONS),
            "nests {} arrays/maps",
        ),
        ("max_nodes", m.nodes, limits.max_nodes, "expands to {} types"),
    )
    for name, value, limit, what in checks:
        if value > limit:
            raise CompileLimitError(
                f"{role} schema {what.format(value)}, over the limit {name}={limit}"
            )


def zigzag_bytes(n: int) -> bytes:
    """Return the Avro varint of ``n`` (zig-zag encoded)."""
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint_tail(b: bytes, p: int, x: int) -> tuple[int, int]:
    """Finish reading a varint whose first byte ``x`` had its continuation bit set."""
    value = x & 0x7F
    shift = 7
    while True:
        x = b[p]
        p += 1
        value |= (x & 0x7F) << shift
        if x < 0x80:
            if shift == 63 and x > 1:
                raise InvalidBodyError("varint overflows 64 bits")
            return value, p
        shift += 7
        if shift > 63:
            raise InvalidBodyError("varint longer than 10 bytes")


BEYOND_ANY_INPUT = 1 << 62
"""A length no input has: what an odd (negative) one-byte length reads as."""

ONE_BYTE_ZIGZAG = tuple((x >> 1) ^ -(x & 1) for x in range(128))
"""The zig-zag decoded value of each one-byte varint (a tuple index instead of four
generic integer operations in a generated decoder)."""

ONE_BYTE_LENGTH = tuple(BEYOND_ANY_INPUT if x & 1 else x >> 1 for x in range(128))
"""The byte length each one-byte varint gives; an odd one (a negative length) gives
``BEYOND_ANY_INPUT``, so the decoder's one range check refuses it."""


ONE_BYTE_VALUE: tuple[int | None, ...] = (*ONE_BYTE_ZIGZAG, *(None,) * 128)
"""The zig-zag value of a varint by its first byte; None when it is longer than one byte
(a continuation bit): a generated decoder reads a small int with one index and one test."""

ONE_BYTE_END: tuple[int, ...] = tuple(
    1 + (x >> 1) if x < 128 and not x & 1 else BEYOND_ANY_INPUT for x in range(256)
)
"""How far a byte string reaches past its length's first byte when that length is one
byte (the byte, then the data); ``BEYOND_ANY_INPUT`` for an odd (negative) length and for
a longer varint, so the decoder's one end check sends both to :func:`read_length_at`."""


def read_int_at(b: bytes, p: int, low: int, high: int, message: str) -> tuple[int, int]:
    """Return the zig-zag varint of more than one byte at ``p`` and the position after it.

    Raises :class:`InvalidBodyError` with ``message`` when the value is outside
    ``low``..``high``; a truncated or overlong varint raises as the generated code does.
    """
    x = b[p]
    p += 1
    y = b[p]  # two bytes inline (values below 2**13), longer ones in read_varint_tail
    if y < 128:
        x = (x & 127) | (y << 7)
        p += 1
    else:
        x, p = read_varint_tail(b, p, x)
    value = (x >> 1) ^ -(x & 1)
    if not low <= value <= high:
        raise InvalidBodyError(message)
    return value, p


def read_length_at(b: bytes, p: int, end: int, message: str) -> tuple[int, int]:
    """Return where the data of the length-prefixed byte string at ``p`` starts, less one,
    and where it ends; raise :class:`InvalidBodyError` with ``message`` when the length is
    negative or reaches past ``end``.

    For the lengths :data:`ONE_BYTE_END` does not cover (one odd byte, or a longer varint)
    and the one-byte ones past ``end``: the generated code then reads the data from the
    first position returned plus one, as it does after a one-byte length.
    """
    x = b[p]
    p += 1
    if x < 128:
        q = p + ONE_BYTE_LENGTH[x]
    else:
        y = b[p]
        if y < 128:
            x = (x & 127) | (y << 7)
            p += 1
        else:
            x, p = read_varint_tail(b, p, x)
        q = p + (BEYOND_ANY_INPUT if x & 1 else x >> 1)
    if q > end:
        raise InvalidBodyError(message)
    return p - 1, q


class Source:
    """Accumulates generated lines and the constants they refer to."""

    def __init__(self, limits: CompileLimits) -> None:
        self.limits = limits
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_InvalidBodyError": InvalidBodyError,
            "_DatumMismatchError": DatumMismatchError,
            "_tail": read_varint_tail,
            "_unpack_f": struct.Struct("<f").unpack_from,
            "_unpack_d": struct.Struct("<d").unpack_from,
            "_pack_f": struct.Struct("<f").pack,
            "_pack_d": struct.Struct("<d").pack,
            "_deepcopy": copy.deepcopy,
            "_Mapping": Mapping,
            "_new": object.__new__,
            "_ZIGZAG": ONE_BYTE_ZIGZAG,
            "_VALUE": ONE_BYTE_VALUE,
            "_END": ONE_BYTE_END,
            "_int_at": read_int_at,
            "_length_at": read_length_at,
        }
        self._counter = 0

    def var(self, prefix: str) -> str:
        """Return a fresh local variable name."""
        self._counter += 1
        return f"{prefix}{self._counter}"

    def const(self, value: Any, prefix: str = "K") -> str:
        """Return the name of a new constant holding ``value`` (never its text)."""
        self._counter += 1
        name = f"_{prefix}{self._counter}"
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        """Append one line of code at ``indent`` levels."""
        self.lines.append("    " * indent + line)

    def build(self, name: str, signature: str) -> Callable[..., Any]:
        """Compile the lines as ``def name(signature)`` and return the function."""
        text = f"def {name}({signature}):\n" + "\n".join(self.lines) + "\n"
        if len(text) > self.limits.max_source_chars:
            raise CompileLimitError(
                f"generated codec of {len(text)} characters, over the limit "
                f"max_source_chars={self.limits.max_source_chars}"
            )
        try:
            code = compile(text, f"<choreo codec {name}>", "exec")
        except (SyntaxError, RecursionError, MemoryError) as exc:
            raise CompileLimitError(f"schema too large or deep to compile: {exc}") from exc
        exec(code, self.namespace)  # noqa: S102 - source built from fixed templates
        function: Callable[..., Any] = self.namespace[name]
        function.__choreo_source__ = text  # type: ignore[attr-defined]
        return function


class MinSize(Visitor[None, int]):
    """The fewest bytes any value of a node encodes to, memoized per named type."""

    _PRIMITIVE = {"null": 0, "float": 4, "double": 8}

    def __init__(self, schema: Schema) -> None:
        super().__init__(schema)
        self.memo: dict[str, int] = {}

    def primitive(self, node: Primitive, arg: None) -> int:
        return self._PRIMITIVE.get(node.kind, 1)

    def one(self, node: Node, arg: None) -> int:
        return 1  # an enum index, a union index, an array or map terminator

    enum = array = map = union = one

    def fixed(self, node: Fixed, arg: None) -> int:
        return node.size

    def record(self, node: Record, arg: None) -> int:
        if node.name not in self.memo:
            self.memo[node.name] = 0  # recursion is refused before this is asked
            self.memo[node.name] = sum(self.visit(f.type, None) for f in node.fields)
        return self.memo[node.name]


def min_encoded_size(schema: Schema, node: Node | None = None) -> int:
    """Return the fewest bytes any value of ``node`` (default: the root) encodes to."""
    return MinSize(schema).visit(schema.root if node is None else node, None)


__all__ += [
    "BEYOND_ANY_INPUT",
    "INT_RANGE",
    "LONG_RANGE",
    "ONE_BYTE_END",
    "ONE_BYTE_LENGTH",
    "ONE_BYTE_VALUE",
    "ONE_BYTE_ZIGZAG",
    "MinSize",
    "read_int_at",
    "read_length_at",
    "read_varint_tail",
]
