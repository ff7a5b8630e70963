"""Event classes against their Avro schemas: the start-up check and the record builders.

:func:`check_event_class` tells, before the first event is sent or read, whether a
dataclass event (:class:`choreo.model.events.Event`) can hold every datum of its schema:
each class field is in the schema, each required schema field is in the class, and each
field's type hint can hold the field's Avro type (nested records against their classes).

:func:`record_builders` pairs the records of a reader schema with the dataclasses that
stand for them (following the class's type hints) and returns, per record, a function
building the class from the record's field values in schema order
(:func:`choreo.model.events.positional_builder`); the codec's decoder calls them
(:class:`choreo.avro.codec.RecordBuilders`).

Both walk the parsed schema (:mod:`choreo.avro.model`) with a :class:`Visitor`, the
visitor's argument being the Python type hint the visited Avro type is declared with.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from choreo.avro.model import (
    Array,
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
from choreo.avro.model import Enum as AvroEnum
from choreo.avro.parse import as_schema
from choreo.errors import SchemaError, UnknownEventError
from choreo.model.events import Event, avro_field_name, event_type_of, positional_builder

if TYPE_CHECKING:
    from choreo.avro.loader import SchemaRegistry

__all__ = ["check_event_class", "record_builders"]

_UNIONS = (typing.Union, types.UnionType)
_SEQUENCES = (list, tuple, Sequence, typing.Sequence)
_MAPPINGS = (dict, Mapping, typing.Mapping)
_PRIMITIVE_HINTS: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int, _dt.datetime),
    "float": (float, int),
    "double": (float, int),
    "string": (str,),
    "bytes": (bytes,),
    "fixed": (bytes,),
}
"""The Python types that can hold each Avro primitive (and fixed)."""


def _is_dataclass_type(value: object) -> bool:
    return isinstance(value, type) and dataclasses.is_dataclass(value)


def _hint_name(hint: Any) -> str:
    return str(getattr(hint, "__name__", hint))


def _is_null(node: Node) -> bool:
    return isinstance(node, Primitive) and node.kind == "null"


# --- record builders ---------------------------------------------------------------------


def record_builders(
    cls: type[Event], schema: Schema | Mapping[str, Any]
) -> dict[str, Callable[..., Any]]:
    """Return, by record full name, functions building ``cls`` and its nested dataclasses.

    ``schema`` is the reader schema of ``cls`` (self-contained; its model or its JSON
    form). Each function takes the record's field values positionally in schema order
    (see :class:`choreo.avro.codec.RecordBuilders`); fields the class lacks are ignored.
    """
    model = as_schema(schema)
    pairing = _Pairing(model)
    pairing.visit(model.root, cls)
    return {
        name: positional_builder(klass, [f.name for f in record.fields])
        for name, (klass, record) in pairing.pairs.items()
    }


class _Pairing(Visitor[Any, None]):
    """Pairs each record of a schema with the dataclass standing for it, following hints.

    The visitor's argument is the type hint the visited node is declared with.
    """

    def __init__(self, schema: Schema) -> None:
        super().__init__(schema)
        self.pairs: dict[str, tuple[type[Any], Record]] = {}

    def primitive(self, node: Primitive, hint: Any) -> None:
        return None

    def enum(self, node: AvroEnum, hint: Any) -> None:
        return None

    def fixed(self, node: Fixed, hint: Any) -> None:
        return None

    def array(self, node: Array, hint: Any) -> None:
        args = typing.get_args(hint)
        if args:
            self.visit(node.items, args[0])

    def map(self, node: Map, hint: Any) -> None:
        args = typing.get_args(hint)
        if len(args) == 2:
            self.visit(node.values, args[1])

    def record(self, node: Record, hint: Any) -> None:
        if not _is_dataclass_type(hint) or node.name in self.pairs:
            return
        self.pairs[node.name] = (hint, node)
        hints = typing.get_type_hints(hint)
        by_avro = {avro_field_name(f): f.name for f in dataclasses.fields(hint)}
        for field in node.fields:
            attr = by_avro.get(field.name)
            if attr is not None:
                self.visit(field.type, hints.get(attr, Any))

    def union(self, node: Union, hint: Any) -> None:
        """A dataclass member goes with the record it names; others into every non-record."""
        if typing.get_origin(hint) in _UNIONS:
            members = [a for a in typing.get_args(hint) if a is not type(None)]
        else:
            members = [hint]
        branches = [self.schema.resolve(b) for b in node.branches]
        for member in members:
            match = next((b for b in branches if _stands_for(member, b)), None)
            if match is not None:
                self.visit(match, member)
                continue
            for branch in branches:
                if not isinstance(branch, Record):
                    self.visit(branch, member)


def _stands_for(hint: Any, node: Node) -> bool:
    """Return True when a dataclass stands for a record: by ``__avro_name__`` or class name."""
    if not _is_dataclass_type(hint) or not isinstance(node, Record):
        return False
    own = getattr(hint, "__avro_name__", None)
    if own is not None:
        return bool(own == node.name)
    return bool(hint.__name__ == node.simple_name)


# --- checking classes against schemas ----------------------------------------------------


def check_event_class(cls: type[Event], registry: SchemaRegistry) -> None:
    """Raise :class:`SchemaError` when ``cls`` and its schema (latest version) disagree.

    A class field missing from the schema, a required schema field (no default) missing
    from the class, or a field whose Python type cannot hold the Avro type is an error;
    nested dataclasses are checked against their nested records.
    """
    name = event_type_of(cls)
    try:
        version = registry.get(name)
    except UnknownEventError as exc:
        raise SchemaError(f"{cls.__qualname__}: no schema named `{name}`") from exc
    if not _is_dataclass_type(cls):
        raise SchemaError(f"{cls.__qualname__} is not a dataclass")
    root = version.model.resolve(version.model.root)
    if not isinstance(root, Record):
        raise SchemaError(f"{cls.__qualname__}: schema `{name}` is not a record")
    checker = _HintCheck(version.model, [], set())
    checker.record_fields(cls, root)
    if checker.problems:
        raise SchemaError(
            f"{cls.__qualname__} does not match {name} v{version.version}: "
            + "; ".join(checker.problems)
        )


class _HintCheck(Visitor[Any, "str | None"]):
    """Why a type hint cannot hold the values of an Avro type (None when it can).

    The visitor's argument is the hint; problems of nested records go to ``problems``,
    and ``seen`` holds the (class, record) pairs already checked, so recursive types end.
    """

    def __init__(self, schema: Schema, problems: list[str], seen: set[tuple[type, str]]) -> None:
        super().__init__(schema)
        self.problems = problems
        self.seen = seen

    def check(self, hint: Any, node: Node) -> str | None:
        """Return why ``hint`` cannot hold ``node``'s values, or None."""
        if hint is Any or isinstance(hint, TypeVar):
            return None
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            return None
        if origin in _UNIONS:
            return self._union_hint(hint, self.schema.resolve(node))
        return self.visit(node, hint)

    def record_fields(self, cls: type[Any], record: Record) -> None:
        """Check a dataclass against a record: its fields both ways, then each field's type."""
        key = (cls, record.name)
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            hints = typing.get_type_hints(cls)
        except (NameError, TypeError) as exc:
            self.problems.append(f"{cls.__qualname__}: cannot read type hints ({exc})")
            return
        schema_fields = {f.name: f for f in record.fields}
        class_fields = {avro_field_name(f): f for f in dataclasses.fields(cls)}
        for avro_name, field in class_fields.items():
            if avro_name not in schema_fields:
                self.problems.append(f"field `{field.name}` is not in the schema")
                continue
            problem = self.check(hints.get(field.name, Any), schema_fields[avro_name].type)
            if problem:
                self.problems.append(f"field `{field.name}`: {problem}")
        for avro_name, schema_field in schema_fields.items():
            if avro_name not in class_fields and not schema_field.has_default:
                self.problems.append(
                    f"required schema field `{avro_name}` is missing from the class"
                )

    def _union_hint(self, hint: Any, node: Node) -> str | None:
        """Every member of a union hint must fit some branch of the schema."""
        branches = node.branches if isinstance(node, Union) else (node,)
        scratch = _HintCheck(self.schema, [], self.seen)  # a branch's problems don't count
        for member in typing.get_args(hint):
            if not any(scratch.check(member, b) is None for b in branches):
                return f"{member!r} is not among {type_label(node, self.schema)}"
        return None

    def union(self, node: Union, hint: Any) -> str | None:
        """A plain hint fits a union only as its one non-null branch, and not if null is allowed."""
        non_null = [b for b in node.branches if not _is_null(b)]
        if len(non_null) != 1:
            return None
        if len(non_null) == len(node.branches) - 1:
            label = type_label(node, self.schema)
            return f"the schema allows null ({label}); declare `X | None`"
        return self.check(hint, non_null[0])

    def primitive(self, node: Primitive, hint: Any) -> str | None:
        return _primitive_problem(hint, node.kind)

    def fixed(self, node: Fixed, hint: Any) -> str | None:
        return _primitive_problem(hint, "fixed")

    def enum(self, node: AvroEnum, hint: Any) -> str | None:
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            values = {m.value for m in hint}
            missing = [s for s in node.symbols if s not in values]
            return f"enum {hint.__name__} lacks symbols {missing}" if missing else None
        if hint is str:
            return None
        return f"{_hint_name(hint)} cannot hold enum {node.name}"

    def array(self, node: Array, hint: Any) -> str | None:
        args = typing.get_args(hint)
        if typing.get_origin(hint) in _SEQUENCES and args:
            return self.check(args[0], node.items)
        return f"{hint!r} cannot hold {type_label(node, self.schema)}"

    def map(self, node: Map, hint: Any) -> str | None:
        args = typing.get_args(hint)
        if typing.get_origin(hint) in _MAPPINGS and len(args) == 2:
            return self.check(args[1], node.values)
        return f"{hint!r} cannot hold {type_label(node, self.schema)}"

    def record(self, node: Record, hint: Any) -> str | None:
        if _is_dataclass_type(hint):
            self.record_fields(hint, node)
            return None
        return f"{hint!r} cannot hold record {node.name}"


def _primitive_problem(hint: Any, kind: str) -> str | None:
    """Return why a hint cannot hold an Avro primitive (or fixed), or None."""
    allowed = _PRIMITIVE_HINTS[kind]
    if isinstance(hint, type):
        if issubclass(hint, allowed) and not (hint is bool and kind != "boolean"):
            return None
        if kind == "string" and issubclass(hint, enum.Enum):
            return None
    return f"{_hint_name(hint)} cannot hold Avro {kind}"
