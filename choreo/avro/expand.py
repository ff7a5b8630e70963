"""Make a parsed file self-contained: each named type it uses defined in full at first use.

The self-contained form is what the Parsing Canonical Form, the fingerprint, the codec
and a schema registry need. Files load in any order: a reference to a type of another
file is replaced by that type's definition the first time it is met, and stays a
reference afterwards. Recursion stays a reference (lint rejects it later).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType

from choreo.avro.jsonform import to_json
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
from choreo.errors import SchemaError

__all__ = ["expand"]

_EMPTY = Schema(Primitive("null"))


class _Expander(Visitor[str, Node]):
    """Rebuild a tree, inlining the first use of each named type; ``arg`` is the path."""

    def __init__(self, lookup: Callable[[str], Named], source: str) -> None:
        super().__init__(_EMPTY)
        self.lookup = lookup
        self.source = source
        self.seen: dict[str, str] = {}  # full name -> its shallow JSON, for clash checks
        self.out: dict[str, Named] = {}

    def first(self, node: Named, where: str) -> bool:
        """Return True when ``node`` is the first definition of its name (else check it)."""
        content = json.dumps(to_json(node, shallow=True), sort_keys=True)
        known = self.seen.get(node.name)
        if known is None:
            self.seen[node.name] = content
            self.out[node.name] = node
            return True
        if known != content:
            raise SchemaError(
                f"{self.source}: {where}: name clash: `{node.name}` has two different definitions"
            )
        return False

    def primitive(self, node: Primitive, arg: str) -> Node:
        return node

    def record(self, node: Record, arg: str) -> Node:
        if not self.first(node, arg):
            return Ref(node.name)
        fields = tuple(self.field(f, f"{node.name}.{f.name}") for f in node.fields)
        rebuilt = Record(
            node.name, node.aliases, node.doc, node.props, fields=fields, error=node.error
        )
        self.out[node.name] = rebuilt
        return rebuilt

    def field(self, f: Field, where: str) -> Field:
        return Field(f.name, self.visit(f.type, where), f.default, f.aliases, f.doc, f.props)

    def enum(self, node: Enum, arg: str) -> Node:
        return node if self.first(node, arg) else Ref(node.name)

    def fixed(self, node: Fixed, arg: str) -> Node:
        return node if self.first(node, arg) else Ref(node.name)

    def array(self, node: Array, arg: str) -> Node:
        return Array(self.visit(node.items, arg + "[]"), node.props)

    def map(self, node: Map, arg: str) -> Node:
        return Map(self.visit(node.values, arg + "{}"), node.props)

    def union(self, node: Union, arg: str) -> Node:
        return Union(tuple(self.visit(b, arg) for b in node.branches))

    def ref(self, node: Ref, arg: str) -> Node:
        if node.name in self.seen:
            return node
        return self.visit(self.lookup(node.name), arg)


def expand(root: Named, lookup: Callable[[str], Named], *, source: str) -> Schema:
    """Return the self-contained schema of ``root``.

    ``lookup(full_name)`` returns the definition of a named type ``root`` refers to. Two
    different definitions of one name raise :class:`SchemaError` (a name clash).
    """
    expander = _Expander(lookup, source)
    new_root = expander.visit(root, root.name)
    return Schema(new_root, MappingProxyType(dict(expander.out)))
