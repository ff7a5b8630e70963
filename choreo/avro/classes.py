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
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from choreo.avro.jsonform import collect_named
from choreo.avro.model import PRIMITIVES, type_label
from choreo.errors import SchemaError, UnknownEventError
from choreo.model.events import Event, avro_field_name, event_type_of, positional_builder

if TYPE_CHECKING:
    from choreo.avro.loader import SchemaRegistry

__all__ = ["check_event_class", "record_builders"]

_RECORD_KINDS = ("record", "error")
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


_Check = Callable[["_Checker", Any, Any], "str | None"]
"""A check of a type hint against one kind of Avro type (a method of :class:`_Checker`)."""


def _is_dataclass_type(value: object) -> bool:
    return isinstance(value, type) and dataclasses.is_dataclass(value)


def _hint_name(hint: Any) -> str:
    return str(getattr(hint, "__name__", hint))


# --- record builders ---------------------------------------------------------------------


def record_builders(cls: type[Event], schema: Mapping[str, Any]) -> dict[str, Callable[..., Any]]:
    """Return, by record full name, functions building ``cls`` and its nested dataclasses.

    ``schema`` is the reader schema of ``cls`` (self-contained). Each function takes the
    record's field values positionally in schema order (see
    :class:`choreo.avro.codec.RecordBuilders`); fields the class lacks are ignored.
    """
    named = collect_named(schema)
    pairs: dict[str, type[Any]] = {}
    _pair_records(cls, schema, named, pairs)
    return {
        name: positional_builder(klass, [f["name"] for f in named[name]["fields"]])
        for name, klass in pairs.items()
    }


def _pair_records(
    hint: Any,
    schema: Any,
    named: Mapping[str, dict[str, Any]],
    pairs: dict[str, type[Any]],
) -> None:
    """Record which dataclass stands for which record of ``schema``, following type hints."""
    if isinstance(schema, str) and schema not in PRIMITIVES:
        schema = named[schema]
    if isinstance(schema, list):
        _pair_union(hint, schema, named, pairs)
        return
    if not isinstance(schema, dict):
        return
    args = typing.get_args(hint)
    kind = schema["type"]
    if kind == "array" and args:
        _pair_records(args[0], schema["items"], named, pairs)
    elif kind == "map" and len(args) == 2:
        _pair_records(args[1], schema["values"], named, pairs)
    elif kind in _RECORD_KINDS and _is_dataclass_type(hint):
        _pair_record(hint, schema, named, pairs)


def _pair_union(
    hint: Any,
    union: list[Any],
    named: Mapping[str, dict[str, Any]],
    pairs: dict[str, type[Any]],
) -> None:
    """Pair each member of a union hint with the union branch it stands for.

    A dataclass member goes with the record branch it names; any other member is
    followed into every branch that is not a record.
    """
    args = typing.get_args(hint)
    if typing.get_origin(hint) in _UNIONS:
        members = [a for a in args if a is not type(None)]
    else:
        members = [hint]
    branches = [named.get(b, b) if isinstance(b, str) else b for b in union]
    for member in members:
        match = next(
            (b for b in branches if isinstance(b, dict) and _stands_for(member, b)), None
        )
        if match is not None:
            _pair_records(member, match, named, pairs)
            continue
        for branch in branches:
            if not (isinstance(branch, dict) and branch["type"] in _RECORD_KINDS):
                _pair_records(member, branch, named, pairs)


def _pair_record(
    cls: type[Any],
    record: Mapping[str, Any],
    named: Mapping[str, dict[str, Any]],
    pairs: dict[str, type[Any]],
) -> None:
    """Pair a record with its dataclass, then its fields' records with the fields' types."""
    if record["name"] in pairs:
        return
    pairs[record["name"]] = cls
    hints = typing.get_type_hints(cls)
    by_avro = {avro_field_name(f): f.name for f in dataclasses.fields(cls)}
    for field in record["fields"]:
        attr = by_avro.get(field["name"])
        if attr is not None:
            _pair_records(hints.get(attr, Any), field["type"], named, pairs)


def _stands_for(hint: Any, record: Mapping[str, Any]) -> bool:
    """Return True when a dataclass stands for a record: by ``__avro_name__`` or class name."""
    if not _is_dataclass_type(hint):
        return False
    if record["type"] not in _RECORD_KINDS:
        return False
    own = getattr(hint, "__avro_name__", None)
    if own is not None:
        return bool(own == record["name"])
    return bool(hint.__name__ == record["name"].rpartition(".")[2])


# --- checking classes against schemas ----------------------------------------------------


def check_event_class(cls: type[Event], registry: SchemaRegistry) -> None:
    """Raise :class:`SchemaError` when ``cls`` and its schema (latest version) disagree.

    A class field missing from the schema, a required schema field (no default) missing
    from the class, or a field whose Python type cannot hold the Avro type is an error;
    nested dataclasses are checked against their nested records.
    """
    name = event_type_of(cls)
    try:
        schema = registry.get(name)
    except UnknownEventError as exc:
        raise SchemaError(f"{cls.__qualname__}: no schema named `{name}`") from exc
    if not _is_dataclass_type(cls):
        raise SchemaError(f"{cls.__qualname__} is not a dataclass")
    checker = _Checker(collect_named(schema.schema), [], set())
    checker.record(cls, schema.schema)
    if checker.problems:
        raise SchemaError(
            f"{cls.__qualname__} does not match {name} v{schema.version}: "
            + "; ".join(checker.problems)
        )


class _Checker:
    """Checks type hints against Avro types; nested records' problems go to ``problems``.

    ``seen`` holds the (class, record) pairs already checked, so recursive types end.
    """

    def __init__(
        self,
        named: Mapping[str, dict[str, Any]],
        problems: list[str],
        seen: set[tuple[type, str]],
    ) -> None:
        self.named = named
        self.problems = problems
        self.seen = seen

    def record(self, cls: type[Any], record: Mapping[str, Any]) -> None:
        """Check a dataclass against a record: its fields both ways, then each field's type."""
        key = (cls, record["name"])
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            hints = typing.get_type_hints(cls)
        except (NameError, TypeError) as exc:
            self.problems.append(f"{cls.__qualname__}: cannot read type hints ({exc})")
            return
        schema_fields = {f["name"]: f for f in record["fields"]}
        class_fields = {avro_field_name(f): f for f in dataclasses.fields(cls)}
        for avro_name, field in class_fields.items():
            if avro_name not in schema_fields:
                self.problems.append(f"field `{field.name}` is not in the schema")
                continue
            problem = self.problem(hints.get(field.name, Any), schema_fields[avro_name]["type"])
            if problem:
                self.problems.append(f"field `{field.name}`: {problem}")
        for avro_name, schema_field in schema_fields.items():
            if avro_name not in class_fields and "default" not in schema_field:
                self.problems.append(
                    f"required schema field `{avro_name}` is missing from the class"
                )

    def problem(self, hint: Any, schema: Any) -> str | None:
        """Return why a Python type hint cannot hold values of an Avro type, or None."""
        if hint is Any or isinstance(hint, TypeVar):
            return None
        if isinstance(schema, str) and schema not in PRIMITIVES:
            schema = self.named[schema]
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            return None
        if origin in _UNIONS:
            return self._union_hint(hint, schema)
        if isinstance(schema, list):
            return self._union_schema(hint, schema)
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind in _PRIMITIVE_HINTS:
            return _primitive_problem(hint, kind)
        check: _Check = _BY_KIND.get(kind, _Checker._record_type)
        return check(self, hint, schema)

    def _union_hint(self, hint: Any, schema: Any) -> str | None:
        """Every member of a union hint must fit some branch of the schema."""
        branches = schema if isinstance(schema, list) else [schema]
        scratch = _Checker(self.named, [], self.seen)  # a branch's own problems don't count
        for member in typing.get_args(hint):
            if not any(scratch.problem(member, b) is None for b in branches):
                return f"{member!r} is not among {type_label(schema)}"
        return None

    def _union_schema(self, hint: Any, union: list[Any]) -> str | None:
        """A plain hint fits a union only as its one non-null branch, and not if null is allowed."""
        non_null = [b for b in union if b != "null"]
        if len(non_null) != 1:
            return None
        if len(non_null) == len(union) - 1:
            return f"the schema allows null ({type_label(union)}); declare `X | None`"
        return self.problem(hint, non_null[0])

    def _enum(self, hint: Any, schema: Mapping[str, Any]) -> str | None:
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            values = {m.value for m in hint}
            missing = [s for s in schema["symbols"] if s not in values]
            return f"enum {hint.__name__} lacks symbols {missing}" if missing else None
        if hint is str:
            return None
        return f"{_hint_name(hint)} cannot hold enum {schema['name']}"

    def _array(self, hint: Any, schema: Mapping[str, Any]) -> str | None:
        args = typing.get_args(hint)
        if typing.get_origin(hint) in _SEQUENCES and args:
            return self.problem(args[0], schema["items"])
        return f"{hint!r} cannot hold {type_label(schema)}"

    def _map(self, hint: Any, schema: Mapping[str, Any]) -> str | None:
        args = typing.get_args(hint)
        if typing.get_origin(hint) in _MAPPINGS and len(args) == 2:
            return self.problem(args[1], schema["values"])
        return f"{hint!r} cannot hold {type_label(schema)}"

    def _record_type(self, hint: Any, schema: Mapping[str, Any]) -> str | None:
        if _is_dataclass_type(hint):
            self.record(hint, schema)
            return None
        return f"{hint!r} cannot hold record {schema['name']}"


_BY_KIND: dict[str, _Check] = {
    "enum": _Checker._enum,
    "array": _Checker._array,
    "map": _Checker._map,
}
"""The check of each complex Avro kind; records (and errors) take the default."""


def _primitive_problem(hint: Any, kind: str) -> str | None:
    """Return why a hint cannot hold an Avro primitive (or fixed), or None."""
    allowed = _PRIMITIVE_HINTS[kind]
    if isinstance(hint, type):
        if issubclass(hint, allowed) and not (hint is bool and kind != "boolean"):
            return None
        if kind == "string" and issubclass(hint, enum.Enum):
            return None
    return f"{_hint_name(hint)} cannot hold Avro {kind}"
