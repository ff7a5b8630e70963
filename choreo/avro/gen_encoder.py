"""Generate a straight-line, validating Avro binary encoder for one schema.

See :mod:`choreo.avro.compiler` for the contract; :func:`explain_encode_problem` is the
slow path that says which field of a datum does not fit.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from choreo.avro.codesource import INT_RANGE, LONG_RANGE, Source, zigzag_bytes
from choreo.avro.defaults import default_value
from choreo.avro.model import (
    Array,
    Enum,
    Fixed,
    Map,
    Node,
    Primitive,
    Record,
    Schema,
    Union,
    Visitor,
    type_label,
)

__all__ = ["EncoderGen", "explain_encode_problem"]

_Arg = tuple[str, int]
"""The generated expression of the value being encoded, and the indentation."""


class EncoderGen(Visitor[_Arg, None]):
    """Emit the code that appends the encoding of the value ``arg[0]`` to ``out``."""

    def __init__(self, schema: Schema, src: Source) -> None:
        super().__init__(schema)
        self.src = src
        self._primitives: dict[str, Callable[[str, int], None]] = {
            "null": self.null,
            "boolean": self.boolean,
            "int": self.integer,
            "long": self.integer,
            "float": self.floating,
            "double": self.floating,
            "string": self.string,
            "bytes": self.bytes_,
        }
        self._kind = ""

    def varint(self, expr: str, indent: int) -> None:
        """Emit code writing the varint of the already zig-zagged int ``expr``."""
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

    def primitive(self, node: Primitive, arg: _Arg) -> None:
        self._kind = node.kind
        self._primitives[node.kind](*arg)

    def null(self, v: str, indent: int) -> None:
        self.src.emit(indent, f"if {v} is not None:")
        self.fail(indent + 1, "expected null", v)

    def boolean(self, v: str, indent: int) -> None:
        e = self.src.emit
        e(indent, f"if {v} is True:")
        e(indent + 1, "ap(1)")
        e(indent, f"elif {v} is False:")
        e(indent + 1, "ap(0)")
        e(indent, "else:")
        self.fail(indent + 1, "expected a boolean", v)

    def integer(self, v: str, indent: int) -> None:
        low, high = INT_RANGE if self._kind == "int" else LONG_RANGE
        self.src.emit(indent, f"if not {low} <= {v} <= {high}:")
        self.fail(indent + 1, f"{self._kind} out of range", v)
        self.varint(f"({v} << 1) ^ ({v} >> 63)", indent)

    def floating(self, v: str, indent: int) -> None:
        pack = "_pack_f" if self._kind == "float" else "_pack_d"
        self.src.emit(indent, f"out += {pack}({v})")

    def string(self, v: str, indent: int) -> None:
        enc = self.src.var("s")
        self.src.emit(indent, f"{enc} = {v}.encode()")
        self.varint(f"len({enc}) << 1", indent)
        self.src.emit(indent, f"out += {enc}")

    def bytes_(self, v: str, indent: int) -> None:
        self.src.emit(indent, f"if not isinstance({v}, (bytes, bytearray, memoryview)):")
        self.fail(indent + 1, "expected bytes", v)
        self.varint(f"len({v}) << 1", indent)
        self.src.emit(indent, f"out += {v}")

    def fixed(self, node: Fixed, arg: _Arg) -> None:
        v, indent = arg
        self.src.emit(
            indent, f"if not isinstance({v}, (bytes, bytearray)) or len({v}) != {node.size}:"
        )
        self.fail(indent + 1, f"expected {node.size} bytes", v)
        self.src.emit(indent, f"out += {v}")

    def enum(self, node: Enum, arg: _Arg) -> None:
        v, indent = arg
        table = self.src.const({s: zigzag_bytes(i) for i, s in enumerate(node.symbols)}, "E")
        self.src.emit(indent, f"out += {table}[{v}]")

    def array(self, node: Array, arg: _Arg) -> None:
        v, indent = arg
        e = self.src.emit
        item = self.src.var("i")
        e(indent, f"if {v}.__class__ is not list and {v}.__class__ is not tuple:")
        self.fail(indent + 1, "expected a list", v)
        e(indent, f"if {v}:")
        self.varint(f"len({v}) << 1", indent + 1)
        e(indent + 1, f"for {item} in {v}:")
        self.visit(node.items, (item, indent + 2))
        e(indent, "ap(0)")

    def map(self, node: Map, arg: _Arg) -> None:
        v, indent = arg
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
        self.visit(node.values, (val, indent + 2))
        e(indent, "ap(0)")

    def record(self, node: Record, arg: _Arg) -> None:
        v, indent = arg
        e = self.src.emit
        e(indent, f"if {v}.__class__ is not dict and not isinstance({v}, _Mapping):")
        self.fail(indent + 1, f"expected a mapping for record {node.name}", v)
        for field in node.fields:
            f = self.src.var("f")
            key = repr(field.name)  # repr: a literal of any text, injection-proof
            if field.has_default:
                value = default_value(self.schema, field.type, field.default)
                e(indent, f"{f} = {v}.get({key}, {self.src.const(value, 'D')})")
            else:
                e(indent, f"{f} = {v}[{key}]")
            self.visit(field.type, (f, indent))

    def union(self, node: Union, arg: _Arg) -> None:
        v, indent = arg
        e = self.src.emit
        tests = _BranchTests(self.schema, self.src, v, node).tests()
        first = True
        for index, test in tests:
            e(indent, f"{'if' if first else 'elif'} {test}:")
            first = False
            if index < 64:
                e(indent + 1, f"ap({index * 2})")
            else:
                e(indent + 1, f"out += {self.src.const(zigzag_bytes(index), 'U')}")
            branch = self.schema.resolve(node.branches[index])
            if branch.kind != "null":  # the test already proved the value is None
                self.visit(node.branches[index], (v, indent + 1))
        e(indent, "else:")
        self.fail(indent + 1, "value matches no branch of " + type_label(node, self.schema), v)


class _BranchTests(Visitor[int, None]):
    """(branch index, Python test) pairs that pick a union branch for a value.

    Exact type matches come first (an enum before a plain string, a record whose field
    names fit before a plain map), then ints promoted into a float or double branch.
    """

    def __init__(self, schema: Schema, src: Source, v: str, union: Union) -> None:
        super().__init__(schema)
        self.src = src
        self.v = v
        self.specific: list[tuple[int, str]] = []
        self.generic: list[tuple[int, str]] = []
        self.promoted: list[tuple[int, str]] = []
        resolved = [schema.resolve(b) for b in union.branches]
        self.records = sum(isinstance(b, Record) for b in resolved)
        self.has_map = any(isinstance(b, Map) for b in resolved)
        self.target = union
        integral = f"isinstance({v}, int) and {v}.__class__ is not bool"
        self.integral = integral
        self._primitive = {
            "null": (self.specific, f"{v} is None"),
            "boolean": (self.specific, f"({v} is True or {v} is False)"),
            "int": (self.specific, f"{integral} and {INT_RANGE[0]} <= {v} <= {INT_RANGE[1]}"),
            "long": (self.specific, f"{integral} and {LONG_RANGE[0]} <= {v} <= {LONG_RANGE[1]}"),
            "float": (self.specific, f"isinstance({v}, float)"),
            "double": (self.specific, f"isinstance({v}, float)"),
            "string": (self.generic, f"isinstance({v}, str)"),
            "bytes": (self.generic, f"isinstance({v}, (bytes, bytearray, memoryview))"),
        }

    def tests(self) -> list[tuple[int, str]]:
        for index, branch in enumerate(self.target.branches):
            self.visit(branch, index)
        return self.specific + self.generic + self.promoted

    def primitive(self, node: Primitive, arg: int) -> None:
        target, test = self._primitive[node.kind]
        target.append((arg, test))
        if node.kind in ("float", "double"):
            self.promoted.append((arg, self.integral))

    def fixed(self, node: Fixed, arg: int) -> None:
        v = self.v
        self.specific.append(
            (arg, f"isinstance({v}, (bytes, bytearray)) and len({v}) == {node.size}")
        )

    def enum(self, node: Enum, arg: int) -> None:
        symbols = self.src.const(frozenset(node.symbols), "S")
        self.specific.append((arg, f"isinstance({self.v}, str) and {self.v} in {symbols}"))

    def array(self, node: Array, arg: int) -> None:
        v = self.v
        self.specific.append((arg, f"({v}.__class__ is list or {v}.__class__ is tuple)"))

    def map(self, node: Map, arg: int) -> None:
        self.generic.append((arg, f"isinstance({self.v}, _Mapping)"))

    def record(self, node: Record, arg: int) -> None:
        v = self.v
        if self.records == 1 and not self.has_map:
            self.generic.append((arg, f"isinstance({v}, _Mapping)"))
            return
        # one of several records (or records and a map): match by field names
        allowed = self.src.const(frozenset(f.name for f in node.fields), "S")
        required = self.src.const(frozenset(f.name for f in node.fields if not f.has_default), "S")
        self.specific.append(
            (arg, f"isinstance({v}, _Mapping) and {required} <= {v}.keys() <= {allowed}")
        )


# --- explaining encode failures ---------------------------------------------------------

_Where = tuple[Any, str]
"""The value being checked and its path in the datum."""


def _expected(node: Node, schema: Schema, value: Any, where: str) -> str:
    label = type_label(node, schema)
    return f"{where}: expected {label}, got {type(value).__name__} {value!r:.60}"


def _float_problem(value: Any, where: str) -> str | None:
    try:
        struct.pack("<f", value)
    except (OverflowError, struct.error):
        return f"{where}: {value} does not fit a 32-bit float"
    return None


def _string_problem(value: Any, where: str) -> str | None:
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"{where}: string is not encodable as UTF-8"
    return None


_PRIMITIVE_TYPES: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes | bytearray | memoryview),
}


class _Problem(Visitor[_Where, "str | None"]):
    """Where and why a datum does not fit (None when it fits)."""

    def primitive(self, node: Primitive, arg: _Where) -> str | None:
        value, path = arg
        where = path or "datum"
        if not _PRIMITIVE_TYPES[node.kind](value):
            return _expected(node, self.schema, value, where)
        if node.kind in ("int", "long"):
            low, high = INT_RANGE if node.kind == "int" else LONG_RANGE
            return None if low <= value <= high else f"{where}: {value} is out of {node.kind} range"
        if node.kind == "float":
            return _float_problem(value, where)
        return _string_problem(value, where) if node.kind == "string" else None

    def fixed(self, node: Fixed, arg: _Where) -> str | None:
        value, path = arg
        ok = isinstance(value, bytes | bytearray) and len(value) == node.size
        return None if ok else _expected(node, self.schema, value, path or "datum")

    def enum(self, node: Enum, arg: _Where) -> str | None:
        value, path = arg
        ok = isinstance(value, str) and value in node.symbols
        return None if ok else _expected(node, self.schema, value, path or "datum")

    def union(self, node: Union, arg: _Where) -> str | None:
        value, path = arg
        if any(self.visit(b, arg) is None for b in node.branches):
            return None
        label = type_label(node, self.schema)
        return f"{path or 'datum'}: {value!r:.60} matches no branch of {label}"

    def array(self, node: Array, arg: _Where) -> str | None:
        value, path = arg
        if not isinstance(value, list | tuple):
            return _expected(node, self.schema, value, path or "datum")
        found = (self.visit(node.items, (item, f"{path}[{i}]")) for i, item in enumerate(value))
        return next((p for p in found if p), None)

    def map(self, node: Map, arg: _Where) -> str | None:
        value, path = arg
        if not isinstance(value, Mapping):
            return _expected(node, self.schema, value, path or "datum")
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path or 'datum'}: map key {key!r:.60} is not a string"
            found = self.visit(node.values, (item, f"{path}[{key!r}]"))
            if found:
                return found
        return None

    def record(self, node: Record, arg: _Where) -> str | None:
        value, path = arg
        if not isinstance(value, Mapping):
            return _expected(node, self.schema, value, path or "datum")
        for field in node.fields:
            here = f"{path}.{field.name}" if path else field.name
            if field.name in value:
                found = self.visit(field.type, (value[field.name], here))
                if found:
                    return found
            elif not field.has_default:
                return f"{here}: missing required field"
        return None


def explain_encode_problem(schema: Schema, datum: Any) -> str:
    """Return where and why ``datum`` does not fit ``schema`` (the slow path of errors)."""
    problem = _Problem(schema).visit(schema.root, (datum, ""))
    return problem or "the datum does not fit the schema"
