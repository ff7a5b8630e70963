"""Read a schema's JSON into the model of :mod:`choreo.avro.model`: the only JSON reader.

:func:`parse_file` reads one ``.avsc`` file's JSON: it qualifies every name with its
namespace (full names everywhere, aliases included), checks the structure and resolves
each reference to a named type, either to one defined in the same file or, through
``is_known``, to one defined elsewhere. Mistakes raise :class:`~choreo.errors.SchemaError`
naming the file and the field (``schemas/x.avsc: shop.orders.OrderCreated.items: unknown
type `Foo```).

:func:`parse_schema` reads a self-contained schema (every named type defined inside it,
as a registry stores it) into a :class:`~choreo.avro.model.Schema`.

Untrusted JSON is bounded before it is walked: nesting deeper than ``max_depth`` or more
than ``max_nodes`` JSON values raise ``SchemaError`` (never ``RecursionError``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from choreo.avro.defaults import check_defaults
from choreo.avro.model import (
    NAMED_KINDS,
    NO_DEFAULT,
    PRIMITIVES,
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
)
from choreo.avro.rawjson import check_json_bounds, full_name, local_names, namespace_of
from choreo.errors import SchemaError

__all__ = [
    "ParsedFile",
    "as_schema",
    "check_json_bounds",
    "full_name",
    "local_names",
    "parse_file",
    "parse_fragment",
    "parse_schema",
    "top_name",
]


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ORDERS = frozenset({"ascending", "descending", "ignore"})
_NAMED_KEYS = frozenset({"type", "name", "namespace", "aliases", "doc"})
_RECORD_KEYS = _NAMED_KEYS | {"fields"}
_ENUM_KEYS = _NAMED_KEYS | {"symbols", "default"}
_FIXED_KEYS = _NAMED_KEYS | {"size"}
_FIELD_KEYS = frozenset({"name", "type", "default", "aliases", "doc"})


def top_name(raw: Any, source: str) -> str:
    """Return the full name of a schema file's top-level named type (checked for shape)."""
    if not isinstance(raw, dict) or raw.get("type") not in NAMED_KINDS:
        raise SchemaError(f"{source}: the top level must be a record, enum or fixed schema")
    name = raw.get("name")
    namespace = raw.get("namespace")
    if not isinstance(name, str) or not (namespace is None or isinstance(namespace, str)):
        raise SchemaError(f"{source}: the top-level type needs a string `name`")
    return full_name(name, namespace)


@dataclass(slots=True)
class ParsedFile:
    """One schema file in the model: its root and the named types it defines and uses."""

    source: str
    root: Named
    defined: dict[str, Named] = field(default_factory=dict)
    references: set[str] = field(default_factory=set)

    @property
    def full_name(self) -> str:
        """Return the full name of the file's top-level named type."""
        return self.root.name


def parse_file(raw: Any, *, source: str, is_known: Callable[[str], bool]) -> ParsedFile:
    """Return the model of one file's schema, or raise :class:`SchemaError`.

    ``is_known(full_name)`` says whether a named type defined in *another* file exists;
    names defined in this file are found without it. The top level must be a named type.
    """
    if not isinstance(raw, dict) or raw.get("type") not in NAMED_KINDS:
        raise SchemaError(f"{source}: the top level must be a record, enum or fixed schema")
    parser = _Parser(source, local_names(raw, source), is_known)
    root = parser.node(raw, None, "")
    assert isinstance(root, Named)
    return ParsedFile(source, root, parser.defined, parser.references)


def parse_schema(raw: Any, *, source: str = "schema") -> Schema:
    """Return the model of a self-contained schema (every named type defined inside it).

    The top level may be any type. Raises :class:`SchemaError` for anything that is not a
    valid schema, including a reference to a name the schema does not define or a field
    default that does not fit its type.
    """
    check_json_bounds(raw, source=source)
    parser = _Parser(source, local_names(raw, source), lambda _name: False)
    root = parser.node(raw, None, "")
    schema = Schema(root, MappingProxyType(dict(parser.defined)))
    check_defaults(schema, source=source)
    return schema


def as_schema(schema: Schema | Any) -> Schema:
    """Return ``schema`` itself, or the model of a self-contained JSON schema."""
    return schema if isinstance(schema, Schema) else parse_schema(schema)


def parse_fragment(raw: Any) -> Node:
    """Return the model of a piece of normalized JSON whose names need not be defined.

    Names become :class:`Ref` nodes unchecked; for labels and messages only.
    """
    check_json_bounds(raw, source="fragment")
    return _Parser("fragment", set(), lambda _name: True).node(raw, None, "")


class _Parser:
    """Walk one schema's JSON, qualifying names and checking structure."""

    def __init__(self, source: str, local: set[str], is_known: Callable[[str], bool]) -> None:
        self.source = source
        self.local = local
        self.is_known = is_known
        self.defined: dict[str, Named] = {}
        self.references: set[str] = set()
        self._complex: dict[str, Callable[[dict[str, Any], str | None, str], Node]] = {
            "record": self.record,
            "error": self.record,
            "enum": self.enum,
            "fixed": self.fixed,
            "array": self.array,
            "map": self.map,
        }

    def fail(self, where: str, problem: str) -> SchemaError:
        prefix = f"{self.source}: {where}" if where else self.source
        return SchemaError(f"{prefix}: {problem}")

    def reference(self, name: str, namespace: str | None, where: str) -> Ref:
        candidates = [full_name(name, namespace)]
        if candidates[0] != name:
            candidates.append(name)
        for candidate in candidates:
            if candidate in self.local:
                return Ref(candidate)
        for candidate in candidates:
            if self.is_known(candidate):
                self.references.add(candidate)
                return Ref(candidate)
        raise self.fail(where, f"unknown type `{name}`")

    def node(self, n: Any, namespace: str | None, where: str) -> Node:
        if isinstance(n, str):
            return self.name(n, namespace, where)
        if isinstance(n, list):
            return self.union(n, namespace, where)
        if not isinstance(n, dict):
            raise self.fail(where, f"a schema must be a string, a list or an object, not {n!r:.60}")
        kind = n.get("type")
        if isinstance(kind, list | dict):
            if set(n) - {"type"}:
                raise self.fail(where, "a nested type object cannot carry other attributes")
            return self.node(kind, namespace, where)
        if not isinstance(kind, str):
            raise self.fail(where, "missing `type`")
        if kind in PRIMITIVES:
            return Primitive(kind, tuple((k, v) for k, v in n.items() if k != "type"))
        build = self._complex.get(kind)
        if build is not None:
            return build(n, namespace, where)
        return self.name(kind, namespace, where)

    def name(self, n: str, namespace: str | None, where: str) -> Node:
        if n in PRIMITIVES:
            return Primitive(n)
        if n in self._complex:
            raise self.fail(where, f"`{n}` must be written as an object with its attributes")
        return self.reference(n, namespace, where)

    def union(self, branches: list[Any], namespace: str | None, where: str) -> Union:
        out: list[Node] = []
        seen: set[str] = set()
        for branch in branches:
            node = self.node(branch, namespace, where)
            key = _union_key(node)
            if key == "union":
                raise self.fail(where, "a union cannot directly contain another union")
            if key in seen:
                raise self.fail(where, f"union lists `{key}` twice")
            seen.add(key)
            out.append(node)
        if not out:
            raise self.fail(where, "empty union")
        return Union(tuple(out))

    def array(self, n: dict[str, Any], namespace: str | None, where: str) -> Array:
        if "items" not in n:
            raise self.fail(where, "array without `items`")
        items = self.node(n["items"], namespace, _join(where, "[]"))
        return Array(items, _props(n, {"type", "items"}))

    def map(self, n: dict[str, Any], namespace: str | None, where: str) -> Map:
        if "values" not in n:
            raise self.fail(where, "map without `values`")
        values = self.node(n["values"], namespace, _join(where, "{}"))
        return Map(values, _props(n, {"type", "values"}))

    def header(self, n: dict[str, Any], namespace: str | None, where: str) -> dict[str, Any]:
        """Return the name, aliases, doc and props a named type's constructor takes."""
        name = n.get("name")
        if not isinstance(name, str):
            raise self.fail(where, f"{n.get('type')} without a `name`")
        own_ns = n.get("namespace")
        if own_ns is not None and not isinstance(own_ns, str):
            raise self.fail(where, "`namespace` must be a string")
        fname = full_name(name, own_ns if own_ns is not None else namespace)
        here = where or fname
        if not all(_NAME_RE.match(part) for part in fname.split(".")):
            raise self.fail(here, f"invalid name `{fname}`")
        if fname in self.defined:
            raise self.fail(here, f"`{fname}` is defined twice in this file")
        aliases = n.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise self.fail(here, "`aliases` must be a list of names")
        doc = n.get("doc")
        return {
            "name": fname,
            "aliases": tuple(full_name(a, namespace_of(fname)) for a in aliases),
            "doc": doc if isinstance(doc, str) else None,
        }

    def record(self, n: dict[str, Any], namespace: str | None, where: str) -> Record:
        head = self.header(n, namespace, where)
        fname = head["name"]
        self.defined[fname] = Record(**head)  # a placeholder while the fields are read
        fields = n.get("fields")
        if not isinstance(fields, list):
            raise self.fail(fname, "record without a `fields` list")
        inner_ns = namespace_of(fname)
        names: set[str] = set()
        parsed = tuple(
            self.field(index, f, fname, inner_ns, names) for index, f in enumerate(fields)
        )
        node = Record(
            **head, props=_props(n, _RECORD_KEYS), fields=parsed, error=n["type"] == "error"
        )
        self.defined[fname] = node
        return node

    def field(
        self, index: int, f: Any, record: str, namespace: str | None, names: set[str]
    ) -> Field:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise self.fail(f"{record}.fields[{index}]", "a field needs a string `name`")
        name = f["name"]
        here = f"{record}.{name}"
        if not _NAME_RE.match(name):
            raise self.fail(here, f"invalid field name `{name}`")
        if name in names:
            raise self.fail(here, "duplicate field name")
        names.add(name)
        if "type" not in f:
            raise self.fail(here, "field without a `type`")
        if "order" in f and f["order"] not in _ORDERS:
            raise self.fail(here, f"invalid `order` {f['order']!r:.40}")
        aliases = f.get("aliases", [])
        if not isinstance(aliases, list) or not all(
            isinstance(a, str) and _NAME_RE.match(a) for a in aliases
        ):
            raise self.fail(here, "`aliases` must be a list of field names")
        doc = f.get("doc")
        return Field(
            name,
            self.node(f["type"], namespace, here),
            f.get("default", NO_DEFAULT),
            tuple(aliases),
            doc if isinstance(doc, str) else None,
            _props(f, _FIELD_KEYS),
        )

    def enum(self, n: dict[str, Any], namespace: str | None, where: str) -> Enum:
        head = self.header(n, namespace, where)
        fname = head["name"]
        symbols = n.get("symbols")
        if not isinstance(symbols, list) or not symbols:
            raise self.fail(fname, "enum without a non-empty `symbols` list")
        for symbol in symbols:
            if not isinstance(symbol, str) or not _NAME_RE.match(symbol):
                raise self.fail(fname, f"invalid enum symbol {symbol!r:.40}")
        if len(set(symbols)) != len(symbols):
            raise self.fail(fname, "duplicate enum symbol")
        default = n.get("default")
        if "default" in n and default not in symbols:
            raise self.fail(fname, f"enum default {default!r:.40} is not one of its symbols")
        node = Enum(**head, props=_props(n, _ENUM_KEYS), symbols=tuple(symbols), default=default)
        self.defined[fname] = node
        return node

    def fixed(self, n: dict[str, Any], namespace: str | None, where: str) -> Fixed:
        head = self.header(n, namespace, where)
        size = n.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise self.fail(head["name"], "fixed without a non-negative integer `size`")
        node = Fixed(**head, props=_props(n, _FIXED_KEYS), size=size)
        self.defined[head["name"]] = node
        return node


def _union_key(node: Node) -> str:
    """Return what a union branch is unique by: its full name, or its type's name."""
    if isinstance(node, Named | Ref):
        return node.name
    if isinstance(node, Primitive):
        return node.kind
    return type(node).__name__.lower()


def _props(n: dict[str, Any], known: frozenset[str] | set[str]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in n.items() if k not in known)


def _join(where: str, part: str) -> str:
    return f"{where}{part}" if where else part
