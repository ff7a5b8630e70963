"""Compile Avro schemas into specialised, validating binary encoders and decoders.

Why not call ``fastavro.schemaless_reader`` on untrusted bytes? fastavro's reader is fast
but lenient: it maps any non-zero byte to ``True``, reads varints of any length (silently
overflowing), turns a negative string length into "the rest of the buffer", lets a
negative union index pick a branch from the end, and loops over an array count claimed by
the bytes before noticing they are missing. choreo must reject all of these (DESIGN §2,
the decode contract in :mod:`choreo.avro.codec`), and a separate validating pre-scan in Python
would cost as much as the decode itself.

So choreo generates, once per schema (encoders) and once per (writer, reader) pair
(decoders), a straight-line Python function with every field inlined: no per-field
dispatch, no dict lookups of schema attributes, varints read with one comparison in the
common one-byte case. The result validates everything the Avro specification calls
invalid *and* runs faster than fastavro's generic Cython reader and writer on typical event
schemas (see ``bench/bench_codec.py``). Schema resolution (reader vs writer: promotions,
field matching by name and alias, defaults, enum defaults, unions) is compiled in too,
following the same rules as :mod:`choreo.avro.compat`.

Generated source never embeds text from a schema: names, symbols and defaults are passed
in as constants of the function's namespace, so a hostile schema cannot inject code.

Values follow fastavro's conventions: records are dicts, arrays lists, maps dicts, enums
their symbol strings, bytes and fixed ``bytes``; logical types are not converted
(``timestamp-millis`` stays an ``int`` of milliseconds, ``decimal`` stays bytes).
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from choreo.avro.compat import names_match, resolve_branch
from choreo.avro.lint import find_recursion
from choreo.avro.model import PRIMITIVES, JsonSchema, collect_named, type_label
from choreo.errors import SchemaError

__all__ = [
    "DEFAULT_MAX_ZERO_SIZE_ITEMS",
    "DatumMismatchError",
    "DecodeLimits",
    "InvalidBodyError",
    "RecordBuilders",
    "ResolutionError",
    "compile_decoder",
    "compile_encoder",
    "explain_encode_problem",
    "min_encoded_size",
]

Encoder = Callable[[Any, bytearray], None]
"""Appends the Avro binary body of a datum to a bytearray."""

Decoder = Callable[[bytes, int], Any]
"""Decodes the Avro binary body starting at an offset; the body must end the buffer."""

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class InvalidBodyError(Exception):
    """Raised by generated decoders on invalid input (turned into ``DecodeError``)."""


class DatumMismatchError(Exception):
    """Raised by generated encoders on a datum that does not fit the schema."""


class ResolutionError(SchemaError):
    """A writer schema cannot be resolved against a reader schema at all."""


def _read_varint_tail(b: bytes, p: int, x: int) -> tuple[int, int]:
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


def _zigzag_bytes(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# --- sizes -------------------------------------------------------------------------


def min_encoded_size(  # noqa: PLR0911 - one branch per Avro type
    schema: JsonSchema, named: Mapping[str, dict[str, Any]]
) -> int:
    """Return the fewest bytes any value of ``schema`` encodes to (0 for null and the like)."""
    if isinstance(schema, str):
        if schema in named:
            return min_encoded_size(named[schema], named)
        return {"null": 0, "float": 4, "double": 8}.get(schema, 1)
    if isinstance(schema, list):
        return 1
    kind = schema["type"]
    if kind in PRIMITIVES:
        return min_encoded_size(kind, named)
    if kind in ("record", "error"):
        return sum(min_encoded_size(f["type"], named) for f in schema["fields"])
    if kind == "fixed":
        size: int = schema["size"]
        return size
    return 1  # enum index, array/map terminator


# --- code generation helpers ----------------------------------------------------------


class _Source:
    """Accumulates generated lines and the constants they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_InvalidBodyError": InvalidBodyError,
            "_DatumMismatchError": DatumMismatchError,
            "_tail": _read_varint_tail,
            "_unpack_f": struct.Struct("<f").unpack_from,
            "_unpack_d": struct.Struct("<d").unpack_from,
            "_pack_f": struct.Struct("<f").pack,
            "_pack_d": struct.Struct("<d").pack,
            "_deepcopy": copy.deepcopy,
            "_Mapping": Mapping,
        }
        self._counter = 0

    def var(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def const(self, value: Any, prefix: str = "K") -> str:
        name = f"_{prefix}{self._counter + 1}"
        self._counter += 1
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def build(self, name: str, signature: str) -> Callable[..., Any]:
        text = f"def {name}({signature}):\n" + "\n".join(self.lines) + "\n"
        try:
            code = compile(text, f"<choreo codec {name}>", "exec")
        except (SyntaxError, RecursionError) as exc:  # pragma: no cover - depth is linted
            raise SchemaError(f"schema too deeply nested to compile: {exc}") from exc
        exec(code, self.namespace)  # noqa: S102 - source built from fixed templates
        function: Callable[..., Any] = self.namespace[name]
        function.__choreo_source__ = text  # type: ignore[attr-defined]
        return function


def _deref(schema: JsonSchema, named: Mapping[str, dict[str, Any]]) -> JsonSchema:
    if isinstance(schema, str) and schema not in PRIMITIVES:
        return named[schema]
    if isinstance(schema, dict) and schema["type"] in PRIMITIVES:
        return schema["type"]
    return schema


def _check_compilable(schema: JsonSchema) -> None:
    chain = find_recursion(schema)
    if chain:
        raise SchemaError("recursive schemas are not supported: " + " → ".join(chain))


# --- encoder ------------------------------------------------------------------------------


def compile_encoder(schema: JsonSchema) -> Encoder:
    """Return a function appending the Avro binary encoding of a datum to a bytearray.

    The function raises :class:`DatumMismatchError`, ``TypeError``, ``ValueError``,
    ``KeyError``, ``AttributeError``, ``OverflowError`` or ``struct.error`` on a datum that
    does not fit; callers turn these into ``EncodeError`` via :func:`explain_encode_problem`.
    """
    _check_compilable(schema)
    named = collect_named(schema)
    src = _Source()
    src.emit(1, "ap = out.append")
    _EncoderGen(src, named).value(schema, "datum", 1)
    src.emit(1, "return None")
    encoder: Encoder = src.build("encode", "datum, out")
    return encoder


class _EncoderGen:
    def __init__(self, src: _Source, named: Mapping[str, dict[str, Any]]) -> None:
        self.src = src
        self.named = named

    def varint(self, expr: str, indent: int) -> None:
        """Emit code writing the zig-zag varint of the already-zig-zagged int ``expr``."""
        e = self.src.emit
        n = self.src.var("n")
        e(indent, f"{n} = {expr}")
        e(indent, f"while {n} > 127:")
        e(indent + 1, f"ap(({n} & 127) | 128)")
        e(indent + 1, f"{n} >>= 7")
        e(indent, f"ap({n})")

    def fail(self, indent: int, message: str, value: str) -> None:
        msg = self.src.const(message, "M")
        self.src.emit(indent, f"raise _DatumMismatchError({msg}, {value})")

    def value(  # noqa: PLR0912 - one branch per Avro type
        self, schema: JsonSchema, v: str, indent: int
    ) -> None:
        schema = _deref(schema, self.named)
        e = self.src.emit
        if isinstance(schema, list):
            self.union(schema, v, indent)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "null":
            e(indent, f"if {v} is not None:")
            self.fail(indent + 1, "expected null", v)
        elif kind == "boolean":
            e(indent, f"if {v} is True:")
            e(indent + 1, "ap(1)")
            e(indent, f"elif {v} is False:")
            e(indent + 1, "ap(0)")
            e(indent, "else:")
            self.fail(indent + 1, "expected a boolean", v)
        elif kind in ("int", "long"):
            low, high = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)
            e(indent, f"if not {low} <= {v} <= {high}:")
            self.fail(indent + 1, f"{kind} out of range", v)
            self.varint(f"({v} << 1) ^ ({v} >> 63)", indent)
        elif kind == "float":
            e(indent, f"out += _pack_f({v})")
        elif kind == "double":
            e(indent, f"out += _pack_d({v})")
        elif kind == "string":
            enc = self.src.var("s")
            e(indent, f"{enc} = {v}.encode()")
            self.varint(f"len({enc}) << 1", indent)
            e(indent, f"out += {enc}")
        elif kind == "bytes":
            e(indent, f"if not isinstance({v}, (bytes, bytearray, memoryview)):")
            self.fail(indent + 1, "expected bytes", v)
            self.varint(f"len({v}) << 1", indent)
            e(indent, f"out += {v}")
        elif kind == "fixed":
            size = schema["size"]
            e(indent, f"if not isinstance({v}, (bytes, bytearray)) or len({v}) != {size}:")
            self.fail(indent + 1, f"expected {schema['size']} bytes", v)
            e(indent, f"out += {v}")
        elif kind == "enum":
            table = self.src.const(
                {s: _zigzag_bytes(i) for i, s in enumerate(schema["symbols"])}, "E"
            )
            e(indent, f"out += {table}[{v}]")
        elif kind == "array":
            self.array(schema, v, indent)
        elif kind == "map":
            self.map(schema, v, indent)
        else:
            self.record(schema, v, indent)

    def array(self, schema: dict[str, Any], v: str, indent: int) -> None:
        e = self.src.emit
        item = self.src.var("i")
        e(indent, f"if {v}.__class__ is not list and {v}.__class__ is not tuple:")
        self.fail(indent + 1, "expected a list", v)
        e(indent, f"if {v}:")
        self.varint(f"len({v}) << 1", indent + 1)
        e(indent + 1, f"for {item} in {v}:")
        self.value(schema["items"], item, indent + 2)
        e(indent, "ap(0)")

    def map(self, schema: dict[str, Any], v: str, indent: int) -> None:
        e = self.src.emit
        key, val, enc = self.src.var("k"), self.src.var("i"), self.src.var("s")
        e(indent, f"if not isinstance({v}, _Mapping):")
        self.fail(indent + 1, "expected a mapping", v)
        e(indent, f"if {v}:")
        self.varint(f"len({v}) << 1", indent + 1)
        e(indent + 1, f"for {key}, {val} in {v}.items():")
        e(indent + 2, f"{enc} = {key}.encode()")
        self.varint(f"len({enc}) << 1", indent + 2)
        e(indent + 2, f"out += {enc}")
        self.value(schema["values"], val, indent + 2)
        e(indent, "ap(0)")

    def record(self, schema: dict[str, Any], v: str, indent: int) -> None:
        e = self.src.emit
        e(indent, f"if {v}.__class__ is not dict and not isinstance({v}, _Mapping):")
        self.fail(indent + 1, f"expected a mapping for record {schema['name']}", v)
        for field in schema["fields"]:
            f = self.src.var("f")
            key = repr(field["name"])  # field names match [A-Za-z_][A-Za-z0-9_]*
            if "default" in field:
                default = self.src.const(
                    json_default_to_value(field["type"], field["default"], self.named), "D"
                )
                e(indent, f"{f} = {v}.get({key}, {default})")
            else:
                e(indent, f"{f} = {v}[{key}]")
            self.value(field["type"], f, indent)

    def union(self, branches: list[Any], v: str, indent: int) -> None:
        e = self.src.emit
        resolved = [_deref(b, self.named) for b in branches]
        tests = _union_tests(resolved, v, self.src, self.named)
        first = True
        for index, test in tests:
            e(indent, f"{'if' if first else 'elif'} {test}:")
            first = False
            e(
                indent + 1,
                f"ap({index * 2})"
                if index < 64
                else f"out += {self.src.const(_zigzag_bytes(index), 'U')}",
            )
            if resolved[index] != "null":  # the test already proved the value is None
                self.value(branches[index], v, indent + 1)
        e(indent, "else:")
        self.fail(indent + 1, "value matches no branch of " + type_label(branches), v)


def _union_tests(  # noqa: PLR0912 - one branch per Avro type
    branches: list[Any], v: str, src: _Source, named: Mapping[str, dict[str, Any]]
) -> list[tuple[int, str]]:
    """Return (branch index, Python test) pairs that pick a union branch for value ``v``.

    Exact type matches come first (an enum before a plain string, a record whose field
    names fit before a plain map), then ints promoted into a float or double branch.
    """
    specific: list[tuple[int, str]] = []
    generic: list[tuple[int, str]] = []
    promoted: list[tuple[int, str]] = []
    records = [b for b in branches if isinstance(b, dict) and b["type"] in ("record", "error")]
    has_map = any(isinstance(b, dict) and b["type"] == "map" for b in branches)
    integral = f"isinstance({v}, int) and {v}.__class__ is not bool"
    for index, branch in enumerate(branches):
        kind = branch if isinstance(branch, str) else branch["type"]
        if kind == "null":
            specific.append((index, f"{v} is None"))
        elif kind == "boolean":
            specific.append((index, f"({v} is True or {v} is False)"))
        elif kind == "int":
            specific.append((index, f"{integral} and {_INT_MIN} <= {v} <= {_INT_MAX}"))
        elif kind == "long":
            specific.append((index, f"{integral} and {_LONG_MIN} <= {v} <= {_LONG_MAX}"))
        elif kind in ("float", "double"):
            specific.append((index, f"isinstance({v}, float)"))
            promoted.append((index, integral))
        elif kind == "string":
            generic.append((index, f"isinstance({v}, str)"))
        elif kind == "bytes":
            generic.append((index, f"isinstance({v}, (bytes, bytearray, memoryview))"))
        elif kind == "fixed":
            specific.append(
                (index, f"isinstance({v}, (bytes, bytearray)) and len({v}) == {branch['size']}")
            )
        elif kind == "enum":
            symbols = src.const(frozenset(branch["symbols"]), "S")
            specific.append((index, f"isinstance({v}, str) and {v} in {symbols}"))
        elif kind == "array":
            specific.append((index, f"({v}.__class__ is list or {v}.__class__ is tuple)"))
        elif kind == "map" or (len(records) == 1 and not has_map):
            generic.append((index, f"isinstance({v}, _Mapping)"))
        else:  # one of several records (or records and a map): match by field names
            allowed = src.const(frozenset(f["name"] for f in branch["fields"]), "S")
            required = src.const(
                frozenset(f["name"] for f in branch["fields"] if "default" not in f), "S"
            )
            specific.append(
                (index, f"isinstance({v}, _Mapping) and {required} <= {v}.keys() <= {allowed}")
            )
    return specific + generic + promoted


def json_default_to_value(  # noqa: PLR0911 - one branch per Avro type
    schema: JsonSchema, default: Any, named: Mapping[str, dict[str, Any]]
) -> Any:
    """Return the datum a JSON default stands for (bytes from code points, union's first)."""
    schema = _deref(schema, named)
    if isinstance(schema, list):
        return json_default_to_value(schema[0], default, named)
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind in ("bytes", "fixed"):
        return str(default).encode("latin-1")
    if kind in ("float", "double"):
        return float(default)
    if kind == "array":
        return [json_default_to_value(schema["items"], d, named) for d in default]
    if kind == "map":
        return {k: json_default_to_value(schema["values"], d, named) for k, d in default.items()}
    if kind in ("record", "error"):
        return {
            f["name"]: json_default_to_value(
                f["type"], default[f["name"]] if f["name"] in default else f["default"], named
            )
            for f in schema["fields"]
        }
    return default


# --- decoder ------------------------------------------------------------------------------


DEFAULT_MAX_ZERO_SIZE_ITEMS = 1 << 20
"""Default cap on items of zero-byte types (``null``, empty records) in one payload."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds a decoder enforces beyond the byte count (items of zero-byte types)."""

    max_zero_size_items: int = DEFAULT_MAX_ZERO_SIZE_ITEMS


class RecordBuilders:
    """Callables that build reader records instead of dicts, by record full name.

    Each callable takes the record's field values positionally, in the reader schema's
    field order. Instances hash by identity, so a codec can cache decoders per instance.
    """

    __slots__ = ("by_name",)

    def __init__(self, by_name: Mapping[str, Callable[..., Any]]) -> None:
        self.by_name = dict(by_name)


def compile_decoder(
    writer: JsonSchema,
    reader: JsonSchema | None = None,
    *,
    limits: DecodeLimits | None = None,
    builders: RecordBuilders | None = None,
) -> Decoder:
    """Return a validating decoder of ``writer``-encoded bodies, resolved to ``reader``.

    ``reader`` None means "read as written". The decoder raises :class:`InvalidBodyError`,
    ``IndexError`` (truncated input), ``struct.error`` or ``UnicodeDecodeError`` on invalid
    bytes; it never loops or allocates more than the input size allows (arrays of
    zero-byte items are capped by ``limits``). Raises :class:`ResolutionError` at compile
    time when the two schemas cannot be resolved at all. With ``builders``, reader records
    they name are built by those callables (which may raise ``ValueError``/``TypeError``).
    """
    _check_compilable(writer)
    wnamed = collect_named(writer)
    if reader is None:
        reader, rnamed = writer, wnamed
    else:
        _check_compilable(reader)
        rnamed = collect_named(reader)
    src = _Source()
    src.emit(1, "end = len(b)")
    gen = _DecoderGen(src, wnamed, rnamed, limits or DecodeLimits(), builders)
    if gen.needs_budget(writer):
        src.emit(1, f"zb = {gen.limits.max_zero_size_items}")
    result = gen.value(writer, reader, 1, "")
    src.emit(1, "if p != end:")
    src.emit(2, "raise _InvalidBodyError('trailing bytes after the body')")
    src.emit(1, f"return {result}")
    decoder: Decoder = src.build("decode", "b, p")
    return decoder


class _DecoderGen:
    def __init__(
        self,
        src: _Source,
        wnamed: Mapping[str, dict[str, Any]],
        rnamed: Mapping[str, dict[str, Any]],
        limits: DecodeLimits,
        builders: RecordBuilders | None = None,
    ) -> None:
        self.src = src
        self.wnamed = wnamed
        self.rnamed = rnamed
        self.limits = limits
        self.builders = builders.by_name if builders is not None else {}

    def needs_budget(self, writer: JsonSchema) -> bool:
        found = False

        def visit(n: JsonSchema) -> None:
            nonlocal found
            n = _deref(n, self.wnamed)
            if isinstance(n, list):
                for b in n:
                    visit(b)
            elif isinstance(n, dict):
                if n["type"] == "array":
                    if min_encoded_size(n["items"], self.wnamed) == 0:
                        found = True
                    visit(n["items"])
                elif n["type"] == "map":
                    visit(n["values"])
                elif n["type"] in ("record", "error"):
                    for f in n["fields"]:
                        visit(f["type"])

        visit(writer)
        return found

    def fail(self, indent: int, message: str) -> None:
        self.src.emit(indent, f"raise _InvalidBodyError({self.src.const(message, 'M')})")

    def varint(self, target: str, indent: int, *, zigzag: bool = True) -> None:
        """Emit code reading one varint at ``p`` into ``target`` (zig-zag decoded)."""
        e = self.src.emit
        e(indent, "x = b[p]")
        e(indent, "p += 1")
        e(indent, "if x > 127:")
        e(indent + 1, "x, p = _tail(b, p, x)")
        if zigzag:
            e(indent, f"{target} = (x >> 1) ^ -(x & 1)")
        elif target != "x":
            e(indent, f"{target} = x")

    def length(self, indent: int) -> str:
        """Emit code reading a byte length and checking it against the remaining input."""
        q = self.src.var("q")
        self.varint("x", indent, zigzag=False)
        e = self.src.emit
        e(indent, f"{q} = p + (x >> 1)")
        e(indent, f"if x & 1 or {q} > end:")  # odd zig-zag value: a negative length
        self.fail(indent + 1, "length out of range")
        return q

    def value(  # noqa: PLR0911, PLR0912, PLR0915 - one branch per Avro type
        self, w: JsonSchema, r: JsonSchema, indent: int, where: str
    ) -> str:
        """Emit code decoding ``w`` resolved to ``r``; return the expression of the value."""
        w = _deref(w, self.wnamed)
        r = _deref(r, self.rnamed)
        if isinstance(w, list):
            return self.writer_union(w, r, indent, where)
        if isinstance(r, list):
            branch = resolve_branch(w, r, self.wnamed, self.rnamed)
            if branch is None:
                raise ResolutionError(
                    f"{where or 'value'}: reader union {type_label(r)} has no branch for "
                    f"{type_label(w)}"
                )
            return self.value(w, r[branch], indent, where)
        wkind = w if isinstance(w, str) else w["type"]
        rkind = r if isinstance(r, str) else r["type"]
        e = self.src.emit
        t = self.src.var("t")
        if wkind == "null":
            self.expect(rkind, ("null",), w, r, where)
            return "None"
        if wkind == "boolean":
            self.expect(rkind, ("boolean",), w, r, where)
            e(indent, "x = b[p]")
            e(indent, "p += 1")
            e(indent, "if x > 1:")
            self.fail(indent + 1, "boolean byte other than 0 or 1")
            e(indent, f"{t} = x == 1")
            return t
        if wkind in ("int", "long"):
            self.expect(
                rkind,
                (wkind, "long", "float", "double")
                if wkind == "int"
                else ("long", "float", "double"),
                w,
                r,
                where,
            )
            self.varint(t, indent)
            if wkind == "int":
                e(indent, f"if not {_INT_MIN} <= {t} <= {_INT_MAX}:")
                self.fail(indent + 1, "int out of 32-bit range")
            if rkind == "double":
                e(indent, f"{t} = float({t})")
            elif rkind == "float":
                e(indent, f"{t} = _unpack_f(_pack_f(float({t})), 0)[0]")
            return t
        if wkind in ("float", "double"):
            self.expect(rkind, (wkind, "double") if wkind == "float" else ("double",), w, r, where)
            size, unpack = (4, "_unpack_f") if wkind == "float" else (8, "_unpack_d")
            e(indent, f"{t} = {unpack}(b, p)[0]")
            e(indent, f"p += {size}")
            return t
        if wkind in ("string", "bytes"):
            self.expect(rkind, ("string", "bytes"), w, r, where)
            q = self.length(indent)
            if rkind == "string":
                e(indent, f"{t} = b[p:{q}].decode()")
            else:
                e(indent, f"{t} = b[p:{q}]")
                if wkind == "string":
                    e(indent, f"{t}.decode()")  # validate UTF-8 even when read as bytes
            e(indent, f"p = {q}")
            return t
        if wkind == "fixed":
            self.expect_named(w, r, where)
            if r["size"] != w["size"]:
                raise ResolutionError(f"{where or w['name']}: fixed size {w['size']} → {r['size']}")
            e(indent, f"if p + {w['size']} > end:")
            self.fail(indent + 1, "truncated fixed")
            e(indent, f"{t} = b[p:p + {w['size']}]")
            e(indent, f"p += {w['size']}")
            return t
        if wkind == "enum":
            return self.enum(w, r, indent, where, t)
        if wkind == "array":
            return self.array(w, r, indent, where, t)
        if wkind == "map":
            return self.map(w, r, indent, where, t)
        return self.record(w, r, indent, where, t)

    def expect(
        self, rkind: str, allowed: tuple[str, ...], w: JsonSchema, r: JsonSchema, where: str
    ) -> None:
        if rkind not in allowed:
            raise ResolutionError(
                f"{where or 'value'}: cannot read {type_label(w)} as {type_label(r)}"
            )

    def expect_named(self, w: dict[str, Any], r: JsonSchema, where: str) -> None:
        if not isinstance(r, dict) or (
            r["type"] != w["type"] and not ({r["type"], w["type"]} <= {"record", "error"})
        ):
            raise ResolutionError(
                f"{where or 'value'}: cannot read {type_label(w)} as {type_label(r)}"
            )
        if not names_match(w, r):
            raise ResolutionError(
                f"{where or 'value'}: name {w['name']} does not match {r['name']} or its aliases"
            )

    def enum(self, w: dict[str, Any], r: JsonSchema, indent: int, where: str, t: str) -> str:
        self.expect_named(w, r, where)
        e = self.src.emit
        reader_symbols = set(r["symbols"])
        mapped: list[str | None] = []
        for symbol in w["symbols"]:
            if symbol in reader_symbols:
                mapped.append(symbol)
            else:
                mapped.append(r.get("default"))
        table = self.src.const(tuple(mapped), "E")
        i = self.src.var("i")
        self.varint(i, indent)
        e(indent, f"if not 0 <= {i} < {len(mapped)}:")
        self.fail(indent + 1, "enum index out of range")
        e(indent, f"{t} = {table}[{i}]")
        if None in mapped:
            e(indent, f"if {t} is None:")
            self.fail(indent + 1, f"enum symbol unknown to the reader's {r['name']}")
        return t

    def blocks(self, item_min: int, indent: int, body: Callable[[int], None], where: str) -> None:
        """Emit the block loop shared by arrays and maps; ``body`` decodes one item."""
        e = self.src.emit
        c, bend = self.src.var("c"), self.src.var("be")
        e(indent, "while True:")
        self.varint(c, indent + 1)
        e(indent + 1, f"if {c} == 0:")
        e(indent + 2, "break")
        e(indent + 1, f"{bend} = -1")
        e(indent + 1, f"if {c} < 0:")
        e(indent + 2, f"{c} = -{c}")
        size = self.src.var("n")
        self.varint(size, indent + 2)
        e(indent + 2, f"if {size} < 0 or {size} > end - p:")
        self.fail(indent + 3, "block size out of range")
        e(indent + 2, f"{bend} = p + {size}")
        if item_min > 0:
            e(indent + 1, f"if {c} * {item_min} > end - p:")
            self.fail(indent + 2, "collection longer than the remaining bytes")
        else:
            e(indent + 1, f"zb -= {c}")
            e(indent + 1, "if zb < 0:")
            self.fail(indent + 2, "too many items of a zero-byte type")
        e(indent + 1, f"for _ in range({c}):")
        body(indent + 2)
        e(indent + 1, f"if {bend} >= 0 and p != {bend}:")
        self.fail(indent + 2, "block size does not match its items")

    def array(self, w: dict[str, Any], r: JsonSchema, indent: int, where: str, t: str) -> str:
        if not isinstance(r, dict) or r["type"] != "array":
            raise ResolutionError(
                f"{where or 'value'}: cannot read {type_label(w)} as {type_label(r)}"
            )
        self.src.emit(indent, f"{t} = []")
        append = self.src.var("a")
        self.src.emit(indent, f"{append} = {t}.append")

        def body(inner: int) -> None:
            item = self.value(w["items"], r["items"], inner, where + "[]")
            self.src.emit(inner, f"{append}({item})")

        self.blocks(min_encoded_size(w["items"], self.wnamed), indent, body, where)
        return t

    def map(self, w: dict[str, Any], r: JsonSchema, indent: int, where: str, t: str) -> str:
        if not isinstance(r, dict) or r["type"] != "map":
            raise ResolutionError(
                f"{where or 'value'}: cannot read {type_label(w)} as {type_label(r)}"
            )
        self.src.emit(indent, f"{t} = {{}}")

        def body(inner: int) -> None:
            key = self.src.var("k")
            q = self.length(inner)
            self.src.emit(inner, f"{key} = b[p:{q}].decode()")
            self.src.emit(inner, f"p = {q}")
            item = self.value(w["values"], r["values"], inner, where + "{}")
            self.src.emit(inner, f"{t}[{key}] = {item}")

        self.blocks(1, indent, body, where)
        return t

    def record(self, w: dict[str, Any], r: JsonSchema, indent: int, where: str, t: str) -> str:
        self.expect_named(w, r, where)
        reader_fields = r["fields"]
        by_name: dict[str, int] = {}
        for index, field in enumerate(reader_fields):
            by_name.setdefault(field["name"], index)
        for index, field in enumerate(reader_fields):
            for alias in field.get("aliases", ()):
                by_name.setdefault(alias, index)
        values: dict[int, str] = {}
        for wfield in w["fields"]:
            here = f"{where}.{wfield['name']}" if where else wfield["name"]
            target = by_name.get(wfield["name"])
            if target is None or target in values:
                # skipped by the reader: decode as written (validating), then drop
                self.value(wfield["type"], wfield["type"], indent, here)
                continue
            values[target] = self.value(wfield["type"], reader_fields[target]["type"], indent, here)
        items = []
        args = []
        for index, field in enumerate(reader_fields):
            key = repr(field["name"])
            if index in values:
                items.append(f"{key}: {values[index]}")
                args.append(values[index])
                continue
            if "default" not in field:
                here = f"{where}.{field['name']}" if where else field["name"]
                raise ResolutionError(
                    f"{here}: the reader's field has no default and the writer lacks it"
                )
            default = json_default_to_value(field["type"], field["default"], self.rnamed)
            const = self.src.const(default, "D")
            expr = f"_deepcopy({const})" if isinstance(default, list | dict) else const
            items.append(f"{key}: {expr}")
            args.append(expr)
        builder = self.builders.get(r["name"])
        if builder is not None:
            self.src.emit(indent, f"{t} = {self.src.const(builder, 'B')}({', '.join(args)})")
        else:
            self.src.emit(indent, f"{t} = {{{', '.join(items)}}}")
        return t

    def writer_union(self, w: list[Any], r: JsonSchema, indent: int, where: str) -> str:
        e = self.src.emit
        t = self.src.var("t")
        raw = self.src.var("u")
        self.varint(raw, indent, zigzag=False)
        reader_branches = r if isinstance(r, list) else [r]
        first = True
        for index, branch in enumerate(w):
            e(indent, f"{'if' if first else 'elif'} {raw} == {index * 2}:")
            first = False
            wb = _deref(branch, self.wnamed)
            target = resolve_branch(wb, reader_branches, self.wnamed, self.rnamed)
            if target is None:
                self.fail(
                    indent + 1,
                    f"writer union branch {type_label(wb)} has no match in the reader",
                )
                continue
            try:
                value = self.value(branch, reader_branches[target], indent + 1, where)
            except ResolutionError as exc:
                self.fail(indent + 1, str(exc))
                continue
            e(indent + 1, f"{t} = {value}")
        e(indent, "else:")
        self.fail(indent + 1, "union index out of range")
        return t


# --- explaining encode failures -------------------------------------------------------------


def explain_encode_problem(schema: JsonSchema, datum: Any) -> str:
    """Return where and why ``datum`` does not fit ``schema`` (the slow path of errors)."""
    named = collect_named(schema)
    problem = _problem(schema, datum, named, "")
    return problem or "the datum does not fit the schema"


def _problem(  # noqa: PLR0911, PLR0912 - one branch per Avro type reads best here
    schema: JsonSchema, value: Any, named: Mapping[str, dict[str, Any]], path: str
) -> str | None:
    schema = _deref(schema, named)
    where = path or "datum"
    if isinstance(schema, list):
        for branch in schema:
            if _problem(branch, value, named, path) is None:
                return None
        return f"{where}: {value!r:.60} matches no branch of {type_label(schema)}"
    kind = schema if isinstance(schema, str) else schema["type"]
    expected = f"{where}: expected {type_label(schema)}, got {type(value).__name__} {value!r:.60}"
    if kind == "null":
        return None if value is None else expected
    if kind == "boolean":
        return None if isinstance(value, bool) else expected
    if kind in ("int", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return expected
        low, high = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)
        return None if low <= value <= high else f"{where}: {value} is out of {kind} range"
    if kind in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return expected
        if kind == "float":
            try:
                struct.pack("<f", value)
            except (OverflowError, struct.error):
                return f"{where}: {value} does not fit a 32-bit float"
        return None
    if kind == "string":
        if not isinstance(value, str):
            return expected
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{where}: string is not encodable as UTF-8"
        return None
    if kind == "bytes":
        return None if isinstance(value, bytes | bytearray | memoryview) else expected
    if kind == "fixed":
        ok = isinstance(value, bytes | bytearray) and len(value) == schema["size"]
        return None if ok else expected
    if kind == "enum":
        return None if isinstance(value, str) and value in schema["symbols"] else expected
    if kind == "array":
        if not isinstance(value, list | tuple):
            return expected
        for i, item in enumerate(value):
            found = _problem(schema["items"], item, named, f"{path}[{i}]")
            if found:
                return found
        return None
    if kind == "map":
        if not isinstance(value, Mapping):
            return expected
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where}: map key {key!r:.60} is not a string"
            found = _problem(schema["values"], item, named, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if not isinstance(value, Mapping):
        return expected
    for field in schema["fields"]:
        here = f"{path}.{field['name']}" if path else field["name"]
        if field["name"] not in value:
            if "default" in field:
                continue
            return f"{here}: missing required field"
        found = _problem(field["type"], value[field["name"]], named, here)
        if found:
            return found
    return None
