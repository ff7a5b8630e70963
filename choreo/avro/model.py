"""The parsed Avro schema model: immutable nodes, named-type references and one visitor.

Every part of choreo that looks inside a schema (lint, the compatibility check, code
generation, the codec compiler, the JSON form) works on this model, never on raw JSON:
:mod:`choreo.avro.parse` is the only module that reads a schema's JSON, and
:class:`Visitor` is the only dispatch over the kinds of Avro types.

The model mirrors a *self-contained, normalized* schema:

- a named type (:class:`Record`, :class:`Enum`, :class:`Fixed`) carries its full name and
  full-name aliases, and appears in full where it is first defined;
- any other use of a named type is a :class:`Ref` to its full name, resolved through
  :attr:`Schema.named` (so a recursive type is representable; lint rejects it);
- primitives, logical types included, are :class:`Primitive`; :class:`Array`, :class:`Map`
  and :class:`Union` hold their parts.

Nodes are frozen dataclasses; attributes choreo does not interpret (``doc`` aside) are
kept in ``props`` so the JSON form round-trips.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

__all__ = [
    "NAMED_KINDS",
    "NO_DEFAULT",
    "PRIMITIVES",
    "Array",
    "Enum",
    "Field",
    "Fixed",
    "Map",
    "Named",
    "Node",
    "Primitive",
    "Record",
    "Ref",
    "Schema",
    "Union",
    "Visitor",
    "type_label",
]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})

A = TypeVar("A")
R = TypeVar("R")

Props = tuple[tuple[str, Any], ...]
"""Attributes of a node that choreo keeps but does not interpret, in source order."""


def _logical(props: Props) -> str | None:
    for key, value in props:
        if key == "logicalType":
            return str(value)
    return None


class _NoDefault:
    """The type of :data:`NO_DEFAULT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()
"""The default of a field that has none (``None`` is the JSON default ``null``)."""


class Node:
    """One Avro type in the model; :meth:`accept` calls the visitor method of its kind."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        """Return the Avro type name (``long``, ``record``, ``array``, ...; ``ref``)."""
        raise NotImplementedError

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return what ``visitor`` makes of this node, given ``arg``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Primitive(Node):
    """``null``, ``boolean``, ``int``, ``long``, ``float``, ``double``, ``bytes`` or ``string``.

    ``props`` holds the other attributes in source order (``logicalType``, ``precision``,
    ...); values of logical types stay raw.
    """

    kind: str
    props: Props = ()

    @property
    def logical(self) -> str | None:
        """Return the ``logicalType`` annotation, or None."""
        return _logical(self.props)

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.primitive(self, arg)``."""
        return visitor.primitive(self, arg)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a record: its name, type, default (:data:`NO_DEFAULT` if none), aliases."""

    name: str
    type: Node
    default: Any = NO_DEFAULT
    aliases: tuple[str, ...] = ()
    doc: str | None = None
    props: Props = ()

    @property
    def has_default(self) -> bool:
        """Return True when the field declares a default (which may be ``null``)."""
        return self.default is not NO_DEFAULT


@dataclass(frozen=True, slots=True)
class Named(Node):
    """What records, enums and fixed share: a full name, full-name aliases and a doc."""

    name: str
    aliases: tuple[str, ...] = ()
    doc: str | None = None
    props: Props = ()

    @property
    def kind(self) -> str:
        """Return the Avro type name (``record``, ``enum`` or ``fixed``)."""
        raise NotImplementedError

    @property
    def simple_name(self) -> str:
        """Return the name without its namespace."""
        return self.name.rpartition(".")[2]

    @property
    def namespace(self) -> str | None:
        """Return the namespace, or None for the null namespace."""
        return self.name.rpartition(".")[0] or None


@dataclass(frozen=True, slots=True)
class Record(Named):
    """A record (or an ``error``, which Avro treats as a record)."""

    fields: tuple[Field, ...] = ()
    error: bool = False

    @property
    def kind(self) -> str:
        """Return ``record``."""
        return "record"

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.record(self, arg)``."""
        return visitor.record(self, arg)


@dataclass(frozen=True, slots=True)
class Enum(Named):
    """An enum: its symbols and the optional default symbol readers fall back to."""

    symbols: tuple[str, ...] = ()
    default: str | None = None

    @property
    def kind(self) -> str:
        """Return ``enum``."""
        return "enum"

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.enum(self, arg)``."""
        return visitor.enum(self, arg)


@dataclass(frozen=True, slots=True)
class Fixed(Named):
    """A fixed-size byte string (``logical`` may be ``decimal``, ``duration``, ...)."""

    size: int = 0

    @property
    def kind(self) -> str:
        """Return ``fixed``."""
        return "fixed"

    @property
    def logical(self) -> str | None:
        """Return the ``logicalType`` annotation, or None."""
        return _logical(self.props)

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.fixed(self, arg)``."""
        return visitor.fixed(self, arg)


@dataclass(frozen=True, slots=True)
class Array(Node):
    """An array of ``items``."""

    items: Node
    props: Props = ()

    @property
    def kind(self) -> str:
        """Return ``array``."""
        return "array"

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.array(self, arg)``."""
        return visitor.array(self, arg)


@dataclass(frozen=True, slots=True)
class Map(Node):
    """A map from strings to ``values``."""

    values: Node
    props: Props = ()

    @property
    def kind(self) -> str:
        """Return ``map``."""
        return "map"

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.map(self, arg)``."""
        return visitor.map(self, arg)


@dataclass(frozen=True, slots=True)
class Union(Node):
    """A union of ``branches`` (never directly another union)."""

    branches: tuple[Node, ...]

    @property
    def kind(self) -> str:
        """Return ``union``."""
        return "union"

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.union(self, arg)``."""
        return visitor.union(self, arg)


@dataclass(frozen=True, slots=True)
class Ref(Node):
    """A use of the named type ``name`` defined elsewhere in the schema."""

    name: str

    @property
    def kind(self) -> str:
        """Return ``ref``."""
        return "ref"

    def accept(self, visitor: Visitor[A, R], arg: A) -> R:
        """Return ``visitor.ref(self, arg)``."""
        return visitor.ref(self, arg)


@dataclass(frozen=True, slots=True)
class Schema:
    """A whole parsed schema: its root node and every named type it defines, by full name.

    Built by :mod:`choreo.avro.parse`; immutable. ``named`` is in definition order.
    """

    root: Node
    named: Mapping[str, Named] = field(default_factory=lambda: MappingProxyType({}))

    def resolve(self, node: Node) -> Node:
        """Return the definition of ``node`` when it is a :class:`Ref`, else ``node``."""
        if isinstance(node, Ref):
            return self.named[node.name]
        return node

    def definitions(self) -> Iterator[Named]:
        """Yield each named type once, in definition order."""
        yield from self.named.values()


class Visitor(Generic[A, R]):
    """One method per kind of node; :meth:`visit` dispatches through :meth:`Node.accept`.

    ``arg`` carries whatever a walk needs downwards (a path, the reader's node, an
    indentation); the return value is the fold's result. Subclasses override the methods
    of the kinds they care about; :meth:`ref` follows the reference through ``schema`` and
    every other default raises ``NotImplementedError`` naming the kind.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def visit(self, node: Node, arg: A) -> R:
        """Return the result of visiting ``node`` with ``arg``."""
        return node.accept(self, arg)

    def primitive(self, node: Primitive, arg: A) -> R:
        """Visit a primitive type."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {node.kind}")

    def record(self, node: Record, arg: A) -> R:
        """Visit a record."""
        raise NotImplementedError(f"{type(self).__name__} does not handle records")

    def enum(self, node: Enum, arg: A) -> R:
        """Visit an enum."""
        raise NotImplementedError(f"{type(self).__name__} does not handle enums")

    def fixed(self, node: Fixed, arg: A) -> R:
        """Visit a fixed."""
        raise NotImplementedError(f"{type(self).__name__} does not handle fixed")

    def array(self, node: Array, arg: A) -> R:
        """Visit an array."""
        raise NotImplementedError(f"{type(self).__name__} does not handle arrays")

    def map(self, node: Map, arg: A) -> R:
        """Visit a map."""
        raise NotImplementedError(f"{type(self).__name__} does not handle maps")

    def union(self, node: Union, arg: A) -> R:
        """Visit a union."""
        raise NotImplementedError(f"{type(self).__name__} does not handle unions")

    def ref(self, node: Ref, arg: A) -> R:
        """Visit the definition a reference names."""
        return self.visit(self.schema.named[node.name], arg)


class _Label(Visitor[None, str]):
    """Short human labels: ``long``, ``array<string>``, ``record shop.Order``."""

    def primitive(self, node: Primitive, arg: None) -> str:
        return node.kind

    def record(self, node: Record, arg: None) -> str:
        return f"record {node.name}"

    def enum(self, node: Enum, arg: None) -> str:
        return f"enum {node.name}"

    def fixed(self, node: Fixed, arg: None) -> str:
        return f"fixed {node.name}"

    def array(self, node: Array, arg: None) -> str:
        return f"array<{self.visit(node.items, None)}>"

    def map(self, node: Map, arg: None) -> str:
        return f"map<{self.visit(node.values, None)}>"

    def union(self, node: Union, arg: None) -> str:
        return "union[" + ", ".join(self.visit(b, None) for b in node.branches) + "]"

    def ref(self, node: Ref, arg: None) -> str:
        named = self.schema.named.get(node.name)
        return self.visit(named, None) if named is not None else node.name


_NO_SCHEMA = Schema(Primitive("null"))


def type_label(node: Node, schema: Schema | None = None) -> str:
    """Return a short human label of a node (``long``, ``array<string>``, ``enum x.Y``).

    References are followed through ``schema`` when given, else shown by name.
    """
    return _Label(schema or _NO_SCHEMA).visit(node, None)
