"""Field defaults: check a JSON default against its type, and turn it into a datum.

Avro writes defaults in JSON: ``bytes`` and ``fixed`` as strings of code points 0-255,
a union's default for its *first* branch, a record's as an object of its fields.
"""

from __future__ import annotations

import json
from typing import Any

from choreo.avro.model import (
    Array,
    Enum,
    Fixed,
    Map,
    Primitive,
    Record,
    Schema,
    Union,
    Visitor,
    type_label,
)
from choreo.errors import SchemaError

__all__ = ["check_defaults", "default_problem", "default_value"]

_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_latin1(value: Any) -> bool:
    return isinstance(value, str) and all(ord(c) < 256 for c in value)


_PRIMITIVE_OK = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: _is_int(v) and _RANGES["int"][0] <= v <= _RANGES["int"][1],
    "long": lambda v: _is_int(v) and _RANGES["long"][0] <= v <= _RANGES["long"][1],
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": _is_latin1,
}


class _Problem(Visitor[Any, "str | None"]):
    """Why a JSON value is not a valid default of a node (None when it is)."""

    def mismatch(self, node: Any, value: Any) -> str:
        return f"default {json.dumps(value)} does not match type {type_label(node, self.schema)}"

    def primitive(self, node: Primitive, arg: Any) -> str | None:
        return None if _PRIMITIVE_OK[node.kind](arg) else self.mismatch(node, arg)

    def fixed(self, node: Fixed, arg: Any) -> str | None:
        if not _is_latin1(arg):
            return self.mismatch(node, arg)
        if len(arg) != node.size:
            return f"a fixed({node.size}) default needs {node.size} characters"
        return None

    def enum(self, node: Enum, arg: Any) -> str | None:
        return None if arg in node.symbols else self.mismatch(node, arg)

    def union(self, node: Union, arg: Any) -> str | None:
        return self.visit(node.branches[0], arg)

    def array(self, node: Array, arg: Any) -> str | None:
        if not isinstance(arg, list):
            return "an array default must be a JSON list"
        return next((p for p in (self.visit(node.items, i) for i in arg) if p), None)

    def map(self, node: Map, arg: Any) -> str | None:
        if not isinstance(arg, dict):
            return "a map default must be a JSON object"
        return next((p for p in (self.visit(node.values, i) for i in arg.values()) if p), None)

    def record(self, node: Record, arg: Any) -> str | None:
        if not isinstance(arg, dict):
            return "a record default must be a JSON object"
        for field in node.fields:
            if field.name in arg:
                problem = self.visit(field.type, arg[field.name])
                if problem:
                    return problem
            elif not field.has_default:
                return f"the record default lacks field `{field.name}`"
        return None


def default_problem(schema: Schema, node: Any, value: Any) -> str | None:
    """Return why ``value`` is not a valid JSON default for ``node`` of ``schema``, or None."""
    return _Problem(schema).visit(node, value)


def check_defaults(schema: Schema, *, source: str) -> None:
    """Raise :class:`SchemaError` naming the first field whose default does not fit its type."""
    checker = _Problem(schema)
    for definition in schema.definitions():
        if not isinstance(definition, Record):
            continue
        for field in definition.fields:
            if field.has_default:
                problem = checker.visit(field.type, field.default)
                if problem:
                    raise SchemaError(f"{source}: {definition.name}.{field.name}: {problem}")


class _Value(Visitor[Any, Any]):
    """The datum a (valid) JSON default stands for."""

    def primitive(self, node: Primitive, arg: Any) -> Any:
        if node.kind == "bytes":
            return str(arg).encode("latin-1")
        if node.kind in ("float", "double"):
            return float(arg)
        return arg

    def fixed(self, node: Fixed, arg: Any) -> Any:
        return str(arg).encode("latin-1")

    def enum(self, node: Enum, arg: Any) -> Any:
        return arg

    def union(self, node: Union, arg: Any) -> Any:
        return self.visit(node.branches[0], arg)

    def array(self, node: Array, arg: Any) -> Any:
        return [self.visit(node.items, item) for item in arg]

    def map(self, node: Map, arg: Any) -> Any:
        return {key: self.visit(node.values, item) for key, item in arg.items()}

    def record(self, node: Record, arg: Any) -> Any:
        return {f.name: self.visit(f.type, arg.get(f.name, f.default)) for f in node.fields}


def default_value(schema: Schema, node: Any, default: Any) -> Any:
    """Return the datum the JSON ``default`` of ``node`` (in ``schema``) stands for."""
    return _Value(schema).visit(node, default)
