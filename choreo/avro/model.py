"""The shape of an Avro schema in JSON form: names, namespaces, references and walking.

choreo keeps schemas as plain JSON values (``str``, ``list``, ``dict``), the form Avro
tools read and write. This module turns a schema file's JSON into the *normalized* form
every other part of choreo works on:

- every named type (record, enum, fixed) carries its **full name** in ``name`` and no
  ``namespace`` key; aliases are full names too;
- a reference to a named type is its full name as a string;
- a primitive written as ``{"type": "int"}`` without other attributes becomes ``"int"``;
- structural mistakes raise :class:`~choreo.errors.SchemaError` naming the file and the
  field (``schemas/x.avsc: shop.orders.OrderCreated.items: unknown type `Foo```).

:func:`expand` then makes a normalized schema *self-contained*: each referenced named type
is written in full at its first occurrence and referenced by name afterwards, which is the
form the Parsing Canonical Form, fingerprints and encoders need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from choreo.errors import SchemaError

__all__ = [
    "NAMED_TYPES",
    "PRIMITIVES",
    "JsonSchema",
    "NormalizedFile",
    "check_defaults",
    "collect_named",
    "default_problem",
    "expand",
    "full_name",
    "local_names",
    "normalize",
    "schema_depth",
    "strip_logical_types",
    "type_label",
    "walk_named",
]

JsonSchema = Any
"""An Avro schema in JSON form (a type name, a union list or a complex-type dict)."""

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})
_COMPLEX = NAMED_TYPES | {"array", "map"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ORDERS = frozenset({"ascending", "descending", "ignore"})


def full_name(name: str, namespace: str | None) -> str:
    """Return the full name of ``name`` in ``namespace`` (a dotted name is already full)."""
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _namespace_of(fullname: str) -> str | None:
    head, _, _ = fullname.rpartition(".")
    return head or None


def _check_full_name(fullname: str, where: str, source: str) -> None:
    if not fullname or not all(_NAME_RE.match(part) for part in fullname.split(".")):
        raise SchemaError(f"{source}: {where}: invalid name `{fullname}`")


class NormalizedFile:
    """One schema file in normalized form: its root and the named types it defines."""

    __slots__ = ("defined", "references", "root", "source")

    def __init__(self, source: str, root: dict[str, Any]) -> None:
        self.source = source
        self.root = root
        self.defined: dict[str, dict[str, Any]] = {}
        self.references: set[str] = set()

    @property
    def full_name(self) -> str:
        """Return the full name of the file's top-level named type."""
        name: str = self.root["name"]
        return name


def normalize(
    raw: JsonSchema,
    *,
    source: str,
    is_known: Callable[[str], bool],
) -> NormalizedFile:
    """Return the normalized form of one file's schema, or raise :class:`SchemaError`.

    ``is_known(full_name)`` says whether a named type defined in *another* file exists;
    names defined in this file are found without it. The top level must be a named type.
    """
    if not isinstance(raw, dict) or raw.get("type") not in NAMED_TYPES:
        raise SchemaError(f"{source}: the top level must be a record, enum or fixed schema")
    local = local_names(raw, None, source)
    placeholder: dict[str, Any] = {}
    out = NormalizedFile(source, placeholder)
    walker = _Normalizer(source, local, is_known, out)
    root = walker.node(raw, None, "")
    assert isinstance(root, dict)
    out.root = root
    return out


def local_names(node: JsonSchema, namespace: str | None, source: str) -> set[str]:
    """Return the full names of every named type defined inside raw JSON ``node``."""
    found: set[str] = set()

    def visit(n: JsonSchema, ns: str | None) -> None:
        if isinstance(n, list):
            for branch in n:
                visit(branch, ns)
        elif isinstance(n, dict):
            kind = n.get("type")
            if kind in NAMED_TYPES and isinstance(n.get("name"), str):
                own_ns = n.get("namespace") if isinstance(n.get("namespace"), str) else ns
                fname = full_name(n["name"], own_ns)
                found.add(fname)
                ns = _namespace_of(fname)
                for field in n.get("fields") or ():
                    if isinstance(field, dict):
                        visit(field.get("type"), ns)
            elif kind == "array":
                visit(n.get("items"), ns)
            elif kind == "map":
                visit(n.get("values"), ns)
            elif isinstance(kind, dict | list):
                visit(kind, ns)

    visit(node, namespace)
    return found


class _Normalizer:
    """Walk one file's JSON, qualifying names and checking structure."""

    def __init__(
        self,
        source: str,
        local: set[str],
        is_known: Callable[[str], bool],
        out: NormalizedFile,
    ) -> None:
        self.source = source
        self.local = local
        self.is_known = is_known
        self.out = out

    def fail(self, where: str, problem: str) -> SchemaError:
        prefix = f"{self.source}: {where}" if where else self.source
        return SchemaError(f"{prefix}: {problem}")

    def reference(self, name: str, namespace: str | None, where: str) -> str:
        candidates = [full_name(name, namespace)]
        if candidates[0] != name:
            candidates.append(name)
        for candidate in candidates:
            if candidate in self.local:
                return candidate
        for candidate in candidates:
            if self.is_known(candidate):
                self.out.references.add(candidate)
                return candidate
        raise self.fail(where, f"unknown type `{name}`")

    def node(  # noqa: PLR0911, PLR0912 - one branch per Avro type
        self, n: JsonSchema, namespace: str | None, where: str
    ) -> JsonSchema:
        if isinstance(n, str):
            if n in PRIMITIVES:
                return n
            if n in _COMPLEX:
                raise self.fail(where, f"`{n}` must be written as an object with its attributes")
            return self.reference(n, namespace, where)
        if isinstance(n, list):
            return self.union(n, namespace, where)
        if not isinstance(n, dict):
            raise self.fail(where, f"a schema must be a string, a list or an object, not {n!r}")
        kind = n.get("type")
        if isinstance(kind, list | dict):
            if set(n) - {"type"}:
                raise self.fail(where, "a nested type object cannot carry other attributes")
            return self.node(kind, namespace, where)
        if not isinstance(kind, str):
            raise self.fail(where, "missing `type`")
        if kind in PRIMITIVES:
            extra = {k: v for k, v in n.items() if k != "type"}
            return {"type": kind, **extra} if extra else kind
        if kind in ("record", "error"):
            return self.record(n, namespace, where)
        if kind == "enum":
            return self.enum(n, namespace, where)
        if kind == "fixed":
            return self.fixed(n, namespace, where)
        if kind == "array":
            if "items" not in n:
                raise self.fail(where, "array without `items`")
            out = dict(n)
            out["items"] = self.node(n["items"], namespace, _join(where, "[]"))
            return out
        if kind == "map":
            if "values" not in n:
                raise self.fail(where, "map without `values`")
            out = dict(n)
            out["values"] = self.node(n["values"], namespace, _join(where, "{}"))
            return out
        if kind in self.local or self.is_known(full_name(kind, namespace)) or self.is_known(kind):
            return self.reference(kind, namespace, where)
        raise self.fail(where, f"unknown type `{kind}`")

    def union(self, branches: list[Any], namespace: str | None, where: str) -> list[Any]:
        out: list[Any] = []
        seen: set[str] = set()
        for branch in branches:
            norm = self.node(branch, namespace, where)
            if isinstance(norm, list):
                raise self.fail(where, "a union cannot directly contain another union")
            if isinstance(norm, str):
                key = norm
            else:
                key = norm["name"] if norm["type"] in NAMED_TYPES else norm["type"]
            if key in seen:
                raise self.fail(where, f"union lists `{key}` twice")
            seen.add(key)
            out.append(norm)
        if not out:
            raise self.fail(where, "empty union")
        return out

    def named_header(
        self, n: dict[str, Any], namespace: str | None, where: str
    ) -> tuple[str, dict[str, Any]]:
        name = n.get("name")
        if not isinstance(name, str):
            raise self.fail(where, f"{n.get('type')} without a `name`")
        own_ns = n.get("namespace")
        if own_ns is not None and not isinstance(own_ns, str):
            raise self.fail(where, "`namespace` must be a string")
        fname = full_name(name, own_ns if own_ns is not None else namespace)
        _check_full_name(fname, where or fname, self.source)
        out = {k: v for k, v in n.items() if k != "namespace"}
        out["name"] = fname
        aliases = n.get("aliases")
        if aliases is not None:
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise self.fail(where or fname, "`aliases` must be a list of names")
            out["aliases"] = [full_name(a, _namespace_of(fname)) for a in aliases]
        if fname in self.out.defined:
            raise self.fail(where or fname, f"`{fname}` is defined twice in this file")
        return fname, out

    def record(self, n: dict[str, Any], namespace: str | None, where: str) -> dict[str, Any]:
        fname, out = self.named_header(n, namespace, where)
        self.out.defined[fname] = out
        fields = n.get("fields")
        if not isinstance(fields, list):
            raise self.fail(fname, "record without a `fields` list")
        inner_ns = _namespace_of(fname)
        new_fields: list[dict[str, Any]] = []
        names: set[str] = set()
        for index, field in enumerate(fields):
            if not isinstance(field, dict) or not isinstance(field.get("name"), str):
                raise self.fail(f"{fname}.fields[{index}]", "a field needs a string `name`")
            fname_f = field["name"]
            here = f"{fname}.{fname_f}"
            if not _NAME_RE.match(fname_f):
                raise self.fail(here, f"invalid field name `{fname_f}`")
            if fname_f in names:
                raise self.fail(here, "duplicate field name")
            names.add(fname_f)
            if "type" not in field:
                raise self.fail(here, "field without a `type`")
            if "order" in field and field["order"] not in _ORDERS:
                raise self.fail(here, f"invalid `order` {field['order']!r}")
            aliases = field.get("aliases")
            if aliases is not None and (
                not isinstance(aliases, list)
                or not all(isinstance(a, str) and _NAME_RE.match(a) for a in aliases)
            ):
                raise self.fail(here, "`aliases` must be a list of field names")
            new_field = dict(field)
            new_field["type"] = self.node(field["type"], inner_ns, here)
            new_fields.append(new_field)
        out["fields"] = new_fields
        return out

    def enum(self, n: dict[str, Any], namespace: str | None, where: str) -> dict[str, Any]:
        fname, out = self.named_header(n, namespace, where)
        symbols = n.get("symbols")
        if not isinstance(symbols, list) or not symbols:
            raise self.fail(fname, "enum without a non-empty `symbols` list")
        for symbol in symbols:
            if not isinstance(symbol, str) or not _NAME_RE.match(symbol):
                raise self.fail(fname, f"invalid enum symbol {symbol!r}")
        if len(set(symbols)) != len(symbols):
            raise self.fail(fname, "duplicate enum symbol")
        if "default" in n and n["default"] not in symbols:
            raise self.fail(fname, f"enum default {n['default']!r} is not one of its symbols")
        self.out.defined[fname] = out
        return out

    def fixed(self, n: dict[str, Any], namespace: str | None, where: str) -> dict[str, Any]:
        fname, out = self.named_header(n, namespace, where)
        size = n.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise self.fail(fname, "fixed without a non-negative integer `size`")
        self.out.defined[fname] = out
        return out


def _join(where: str, part: str) -> str:
    return f"{where}{part}" if where else part


def type_label(schema: JsonSchema) -> str:
    """Return a short human label of a normalized schema (``long``, ``array<string>``)."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union[" + ", ".join(type_label(b) for b in schema) + "]"
    kind = schema["type"]
    if kind in NAMED_TYPES:
        return f"{'record' if kind == 'error' else kind} {schema['name']}"
    if kind == "array":
        return f"array<{type_label(schema['items'])}>"
    if kind == "map":
        return f"map<{type_label(schema['values'])}>"
    return str(kind)


def expand(
    root: dict[str, Any],
    lookup: Callable[[str], dict[str, Any]],
    *,
    source: str,
) -> dict[str, Any]:
    """Return ``root`` made self-contained: each named type defined at its first use.

    ``lookup(full_name)`` returns the normalized definition of a named type defined in
    another file. A recursive reference stays a reference (lint rejects recursion later);
    two different definitions of one name raise :class:`SchemaError` (a name clash).
    """
    defined: dict[str, dict[str, Any]] = {}

    def visit(n: JsonSchema, where: str) -> JsonSchema:  # noqa: PLR0911 - one branch per Avro type
        if isinstance(n, str):
            if n in PRIMITIVES or n in defined:
                return n
            return visit(lookup(n), where)
        if isinstance(n, list):
            return [visit(b, where) for b in n]
        kind = n["type"]
        if kind in NAMED_TYPES:
            name = n["name"]
            if name in defined:
                if _canonical_json(defined[name]) != _canonical_json(n):
                    raise SchemaError(
                        f"{source}: {where}: name clash: `{name}` has two different definitions"
                    )
                return name
            out = dict(n)
            defined[name] = out
            if kind in ("record", "error"):
                out["fields"] = [
                    {**f, "type": visit(f["type"], f"{name}.{f['name']}")} for f in n["fields"]
                ]
            return out
        if kind == "array":
            return {**n, "items": visit(n["items"], where + "[]")}
        if kind == "map":
            return {**n, "values": visit(n["values"], where + "{}")}
        return n

    result = visit(root, root["name"])
    assert isinstance(result, dict)
    return result


def _canonical_json(schema: JsonSchema) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def collect_named(schema: JsonSchema) -> dict[str, dict[str, Any]]:
    """Return every named type defined in a self-contained schema, by full name."""
    return {n["name"]: n for n in walk_named(schema)}


def walk_named(schema: JsonSchema) -> Iterator[dict[str, Any]]:
    """Yield each named-type definition of a schema once, in definition order."""
    if isinstance(schema, list):
        for branch in schema:
            yield from walk_named(branch)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in NAMED_TYPES:
            yield schema
            for field in schema.get("fields", ()):
                yield from walk_named(field["type"])
        elif kind == "array":
            yield from walk_named(schema["items"])
        elif kind == "map":
            yield from walk_named(schema["values"])


def schema_depth(schema: JsonSchema, named: Mapping[str, dict[str, Any]] | None = None) -> int:
    """Return the nesting depth of a self-contained schema (records, arrays and maps count)."""
    table = dict(named) if named is not None else collect_named(schema)
    memo: dict[str, int] = {}

    def depth(  # noqa: PLR0911 - one branch per Avro type
        n: JsonSchema, active: frozenset[str]
    ) -> int:
        if isinstance(n, str):
            if n in PRIMITIVES:
                return 0
            if n in memo:
                return memo[n]
            if n in active:  # recursion is reported by lint; do not loop here
                return 0
            return depth(table[n], active)
        if isinstance(n, list):
            return max(depth(b, active) for b in n)
        kind = n["type"]
        if kind in ("record", "error"):
            inner = active | {n["name"]}
            value = 1 + max((depth(f["type"], inner) for f in n["fields"]), default=0)
            memo[n["name"]] = value
            return value
        if kind == "array":
            return 1 + depth(n["items"], active)
        if kind == "map":
            return 1 + depth(n["values"], active)
        return 0

    return depth(schema, frozenset())


def strip_logical_types(schema: JsonSchema) -> JsonSchema:
    """Return a copy of ``schema`` without ``logicalType`` annotations (values stay raw)."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return [strip_logical_types(b) for b in schema]
    kind = schema["type"]
    if kind in PRIMITIVES:
        return kind
    out = {k: v for k, v in schema.items() if k not in ("logicalType", "precision", "scale")}
    if kind in ("record", "error"):
        out["fields"] = [{**f, "type": strip_logical_types(f["type"])} for f in schema["fields"]]
    elif kind == "array":
        out["items"] = strip_logical_types(schema["items"])
    elif kind == "map":
        out["values"] = strip_logical_types(schema["values"])
    return out


_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


def default_problem(  # noqa: PLR0911, PLR0912 - one branch per Avro type
    schema: JsonSchema, value: Any, named: Mapping[str, dict[str, Any]]
) -> str | None:
    """Return why ``value`` is not a valid JSON default for ``schema``, or None if it is.

    A union's default must match the union's first branch (Avro specification).
    """
    if isinstance(schema, str) and schema not in PRIMITIVES:
        schema = named[schema]
    if isinstance(schema, list):
        return default_problem(schema[0], value, named)
    kind = schema if isinstance(schema, str) else schema["type"]
    ok: bool
    if kind == "null":
        ok = value is None
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind in ("int", "long"):
        low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif kind in ("float", "double"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str)
    elif kind in ("bytes", "fixed"):
        ok = isinstance(value, str) and all(ord(c) < 256 for c in value)
        if ok and kind == "fixed" and len(value) != schema["size"]:
            return f"a fixed({schema['size']}) default needs {schema['size']} characters"
    elif kind == "enum":
        ok = value in schema["symbols"]
    elif kind == "array":
        if not isinstance(value, list):
            return "an array default must be a JSON list"
        for item in value:
            problem = default_problem(schema["items"], item, named)
            if problem:
                return problem
        return None
    elif kind == "map":
        if not isinstance(value, dict):
            return "a map default must be a JSON object"
        for item in value.values():
            problem = default_problem(schema["values"], item, named)
            if problem:
                return problem
        return None
    else:  # record
        if not isinstance(value, dict):
            return "a record default must be a JSON object"
        for field in schema["fields"]:
            if field["name"] in value:
                problem = default_problem(field["type"], value[field["name"]], named)
            elif "default" in field:
                problem = None
            else:
                problem = f"the record default lacks field `{field['name']}`"
            if problem:
                return problem
        return None
    if ok:
        return None
    return f"default {json.dumps(value)} does not match type {type_label(schema)}"


def check_defaults(schema: JsonSchema, *, source: str) -> None:
    """Raise :class:`SchemaError` naming the field whose default does not match its type."""
    named = collect_named(schema)
    for definition in named.values():
        for field in definition.get("fields", ()):
            if "default" in field:
                problem = default_problem(field["type"], field["default"], named)
                if problem:
                    where = f"{definition['name']}.{field['name']}"
                    raise SchemaError(f"{source}: {where}: {problem}")
