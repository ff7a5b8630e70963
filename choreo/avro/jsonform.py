"""The model back to Avro's JSON form: normalized, self-contained, or without logical types.

:func:`to_json` writes what :attr:`choreo.avro.loader.SchemaVersion.schema` holds (full
names, no ``namespace`` keys, each named type in full at its first use), which fastavro
parses and a Confluent registry stores.
"""

from __future__ import annotations

import json
from typing import Any

from choreo.avro.model import (
    Array,
    Enum,
    Field,
    Fixed,
    Map,
    Named,
    Node,
    Primitive,
    Record,
    Ref,
    Schema,
    Union,
    Visitor,
)
from choreo.avro.parse import parse_fragment, parse_schema

__all__ = ["canonical_form", "collect_named", "strip_logical_types", "to_json"]

JsonSchema = Any
"""An Avro schema in JSON form (a type name, a union list or a complex-type dict)."""

_LOGICAL_PROPS = frozenset({"logicalType", "precision", "scale"})
_EMPTY = Schema(Primitive("null"))


class _ToJson(Visitor[None, JsonSchema]):
    """Render nodes as JSON; options drop docs, logical types, or nested definitions."""

    def __init__(
        self, *, docs: bool = True, logical: bool = True, top: Named | None = None
    ) -> None:
        super().__init__(_EMPTY)
        self.docs = docs
        self.logical = logical
        self.top = top  # when set, named types other than it render as their names

    def props(self, props: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
        if self.logical:
            return dict(props)
        return {k: v for k, v in props if k not in _LOGICAL_PROPS}

    def head(self, node: Named, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind, "name": node.name}
        if node.aliases:
            out["aliases"] = list(node.aliases)
        if node.doc is not None and self.docs:
            out["doc"] = node.doc
        out.update(self.props(node.props))
        return out

    def shallow(self, node: Named) -> bool:
        return self.top is not None and node is not self.top

    def primitive(self, node: Primitive, arg: None) -> JsonSchema:
        props = self.props(node.props)
        return {"type": node.kind, **props} if props else node.kind

    def record(self, node: Record, arg: None) -> JsonSchema:
        if self.shallow(node):
            return node.name
        out = self.head(node, "error" if node.error else "record")
        out["fields"] = [self.field(f) for f in node.fields]
        return out

    def field(self, f: Field) -> dict[str, Any]:
        out: dict[str, Any] = {"name": f.name, "type": self.visit(f.type, None)}
        if f.has_default:
            out["default"] = f.default
        if f.aliases:
            out["aliases"] = list(f.aliases)
        if f.doc is not None and self.docs:
            out["doc"] = f.doc
        out.update(f.props)
        return out

    def enum(self, node: Enum, arg: None) -> JsonSchema:
        if self.shallow(node):
            return node.name
        out = self.head(node, "enum")
        out["symbols"] = list(node.symbols)
        if node.default is not None:
            out["default"] = node.default
        return out

    def fixed(self, node: Fixed, arg: None) -> JsonSchema:
        if self.shallow(node):
            return node.name
        out = self.head(node, "fixed")
        out["size"] = node.size
        return out

    def array(self, node: Array, arg: None) -> JsonSchema:
        return {"type": "array", "items": self.visit(node.items, None), **dict(node.props)}

    def map(self, node: Map, arg: None) -> JsonSchema:
        return {"type": "map", "values": self.visit(node.values, None), **dict(node.props)}

    def union(self, node: Union, arg: None) -> JsonSchema:
        return [self.visit(b, None) for b in node.branches]

    def ref(self, node: Ref, arg: None) -> JsonSchema:
        return node.name


def to_json(
    node: Node | Schema, *, docs: bool = True, logical: bool = True, shallow: bool = False
) -> JsonSchema:
    """Return the normalized JSON form of a node (or of a whole schema's root).

    ``docs=False`` leaves out ``doc`` attributes, ``logical=False`` the ``logicalType``
    annotations (and ``precision``/``scale``), and ``shallow=True`` writes every named
    type inside a named ``node`` as its name.
    """
    root = node.root if isinstance(node, Schema) else node
    top = root if shallow and isinstance(root, Named) else None
    return _ToJson(docs=docs, logical=logical, top=top).visit(root, None)


def strip_logical_types(schema: JsonSchema) -> JsonSchema:
    """Return a copy of normalized JSON ``schema`` without ``logicalType`` annotations."""
    return to_json(parse_fragment(schema), logical=False)


def collect_named(schema: JsonSchema) -> dict[str, dict[str, Any]]:
    """Return the JSON definition of every named type of a self-contained JSON schema."""
    model = parse_schema(schema)
    return {name: to_json(node) for name, node in model.named.items()}


class _Canonical(Visitor[None, str]):
    """The Parsing Canonical Form of the Avro specification, as text."""

    def __init__(self) -> None:
        super().__init__(_EMPTY)
        self.seen: set[str] = set()

    def first(self, node: Named) -> bool:
        if node.name in self.seen:
            return False
        self.seen.add(node.name)
        return True

    def primitive(self, node: Primitive, arg: None) -> str:
        return json.dumps(node.kind)

    def record(self, node: Record, arg: None) -> str:
        if not self.first(node):
            return json.dumps(node.name)
        fields = ",".join(
            f'{{"name":{json.dumps(f.name)},"type":{self.visit(f.type, None)}}}'
            for f in node.fields
        )
        return f'{{"name":{json.dumps(node.name)},"type":"record","fields":[{fields}]}}'

    def enum(self, node: Enum, arg: None) -> str:
        if not self.first(node):
            return json.dumps(node.name)
        symbols = ",".join(json.dumps(s) for s in node.symbols)
        return f'{{"name":{json.dumps(node.name)},"type":"enum","symbols":[{symbols}]}}'

    def fixed(self, node: Fixed, arg: None) -> str:
        if not self.first(node):
            return json.dumps(node.name)
        return f'{{"name":{json.dumps(node.name)},"type":"fixed","size":{node.size}}}'

    def array(self, node: Array, arg: None) -> str:
        return f'{{"type":"array","items":{self.visit(node.items, None)}}}'

    def map(self, node: Map, arg: None) -> str:
        return f'{{"type":"map","values":{self.visit(node.values, None)}}}'

    def union(self, node: Union, arg: None) -> str:
        return "[" + ",".join(self.visit(b, None) for b in node.branches) + "]"

    def ref(self, node: Ref, arg: None) -> str:
        return json.dumps(node.name)


def canonical_form(schema: Schema | Node) -> str:
    """Return the Parsing Canonical Form of a schema (the text fingerprints are taken of)."""
    root = schema.root if isinstance(schema, Schema) else schema
    return _Canonical().visit(root, None)
