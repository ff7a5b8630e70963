"""Typed events: Python classes that stand for Avro record schemas.

An event class is a frozen dataclass that subclasses :class:`Event` and names its Avro
schema in ``__avro_name__`` (a namespaced full name such as ``shop.orders.OrderCreated``).
``choreo schemas codegen`` writes such classes from ``schemas/``; users may also write them
by hand, and choreo checks them against the schema at start-up
(:func:`check_event_class`).

Mapping between classes and Avro datums (:func:`to_avro` / :func:`from_avro`), read from
the class's type hints once per class and compiled into one function each way:

- ``str``, ``int``, ``float``, ``bool``, ``bytes``, ``None``, ``Literal`` pass through;
- a nested dataclass is a nested record; ``Sequence[X]`` / ``tuple[X, ...]`` / ``list[X]``
  an array (decoded as a tuple, or a list for ``list[X]``); ``Mapping[str, X]`` /
  ``dict[str, X]`` a map; ``X | None`` an optional union; other unions of dataclasses are
  told apart by their field names;
- an :class:`enum.Enum` is an Avro enum (its values are the symbols);
- a ``datetime`` is a ``timestamp-millis`` (UTC); the generated classes instead keep
  timestamps as ``int`` milliseconds since the epoch, like the envelope does;
- a field whose Avro name is a Python keyword is declared with
  ``field(metadata={"avro_name": "class"})``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import itertools
import keyword
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from choreo.errors import SchemaError

if TYPE_CHECKING:
    from choreo.avro.loader import SchemaRegistry

__all__ = [
    "Event",
    "SagaTimedOut",
    "avro_field_name",
    "check_event_class",
    "converters",
    "event_type_of",
    "from_avro",
    "record_builders",
    "to_avro",
]

E = TypeVar("E", bound="Event")


class Event:
    """Base class of typed events; subclasses are dataclasses naming their Avro schema."""

    __slots__ = ()
    __avro_name__: ClassVar[str]


def event_type_of(event: Event | type[Event]) -> str:
    """Return the event type (the Avro full name) of an event or an event class."""
    cls = event if isinstance(event, type) else type(event)
    try:
        return cls.__avro_name__
    except AttributeError:
        raise TypeError(
            f"{cls.__qualname__} does not name its Avro schema (__avro_name__)"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaTimedOut(Event):
    """choreo's own event: a saga's expected next event did not arrive before its deadline.

    The tracker emits it (schema ``choreo.SagaTimedOut``, shipped with choreo and always
    loaded); services may compensate on it.
    """

    __avro_name__: ClassVar[str] = "choreo.SagaTimedOut"

    saga: str
    """Name of the saga."""
    correlation_id: str
    """Correlation id of the stuck saga."""
    step: str
    """The step whose next event is overdue (``service.handler``)."""
    deadline_ms: int
    """The step's deadline, in milliseconds after its last event."""
    detected_at: int
    """When the tracker noticed, in milliseconds since the epoch (UTC)."""


def avro_field_name(field: dataclasses.Field[Any]) -> str:
    """Return the Avro name of a dataclass field (``metadata["avro_name"]`` or its name)."""
    name = field.metadata.get("avro_name", field.name)
    return str(name)


# --- conversion ---------------------------------------------------------------------------


def to_avro(event: Event) -> dict[str, Any]:
    """Return the Avro datum (a dict of plain values) of a dataclass event."""
    cls = type(event)
    converter = _TO.get(cls)
    if converter is None:
        converter = _compile(cls).to_avro
    return converter(event)


def from_avro(cls: type[E], datum: Mapping[str, Any]) -> E:
    """Return an instance of ``cls`` built from an Avro datum (as decoded by the codec).

    Raises ``TypeError``/``ValueError``/``KeyError`` when the datum does not fit the class.
    """
    converter = _FROM.get(cls)
    if converter is None:
        converter = _compile(cls).from_avro
    result: E = converter(datum)
    return result


def converters(cls: type[E]) -> tuple[Callable[[E], dict[str, Any]], Callable[[Any], E]]:
    """Return the compiled (to_avro, from_avro) functions of a dataclass, compiling once."""
    compiled = _compile(cls)
    return compiled.to_avro, compiled.from_avro


_TO: dict[type, Callable[[Any], dict[str, Any]]] = {}
_FROM: dict[type, Callable[[Any], Any]] = {}
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _datetime_to_ms(value: _dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _ms_to_datetime(value: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(milliseconds=value)


class _Compiled:
    __slots__ = ("from_avro", "to_avro")

    def __init__(self, to: Callable[[Any], dict[str, Any]], frm: Callable[[Any], Any]) -> None:
        self.to_avro = to
        self.from_avro = frm


def _slot_setters(
    cls: type[Any], fields: list[dataclasses.Field[Any]]
) -> list[Callable[[Any, Any], None]] | None:
    """Return the slot setters of ``fields`` when building without ``__init__`` is safe.

    That is a slotted dataclass with a generated ``__init__`` taking every field and no
    ``__post_init__``: its ``__init__`` only assigns (through ``object.__setattr__`` when
    frozen, which costs about twice a direct slot store).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.init or hasattr(cls, "__post_init__"):
        return None
    if not all(f.init for f in fields) or "__slots__" not in cls.__dict__:
        return None
    setters = []
    for field in fields:
        for klass in cls.__mro__:
            descriptor = klass.__dict__.get(field.name)
            if descriptor is not None:
                break
        if descriptor is None or type(descriptor).__name__ != "member_descriptor":
            return None
        setters.append(descriptor.__set__)
    return setters


def _compile(cls: type[Any]) -> _Compiled:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{getattr(cls, '__qualname__', cls)!r} is not a dataclass")
    if cls in _TO:
        return _Compiled(_TO[cls], _FROM[cls])
    builder = _Builder()
    to, frm = builder.build(cls)
    return _Compiled(to, frm)


class _Builder:
    """Generates to/from converters of a dataclass (and the dataclasses it contains)."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.namespace: dict[str, Any] = {
            "_dt_to_ms": _datetime_to_ms,
            "_ms_to_dt": _ms_to_datetime,
            "_Mapping": Mapping,
            "_new": object.__new__,
        }

    def name(self, value: Any, prefix: str) -> str:
        key = f"_{prefix}{next(self.counter)}"
        self.namespace[key] = value
        return key

    def build(self, cls: type[Any]) -> tuple[Callable[[Any], dict[str, Any]], Callable[[Any], Any]]:
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init or f.name in hints]
        to_parts: list[str] = []
        from_args: list[str] = []
        for field in fields:
            hint = hints.get(field.name, Any)
            avro = avro_field_name(field)
            attr = f"e.{field.name}"
            to_parts.append(f"{avro!r}: {self.to_expr(hint, attr, 1)}")
            if not field.init:
                continue
            value = self.from_expr(hint, f"d[{avro!r}]", 1)
            if field.default is not dataclasses.MISSING:
                default = self.name(field.default, "D")
                value = f"({value} if {avro!r} in d else {default})"
            elif field.default_factory is not dataclasses.MISSING:
                factory = self.name(field.default_factory, "F")
                value = f"({value} if {avro!r} in d else {factory}())"
            from_args.append(f"{field.name}={value}")
        cls_name = self.name(cls, "C")
        setters = _slot_setters(cls, fields)
        if setters is None:
            from_body = f"    return {cls_name}({', '.join(from_args)})\n"
        else:  # frozen slotted dataclass without __post_init__: skip the slow frozen __init__
            lines = [f"    o = _new({cls_name})"]
            for arg, setter in zip(from_args, setters, strict=True):
                value = arg.split("=", 1)[1]
                lines.append(f"    {self.name(setter, 'S')}(o, {value})")
            lines.append("    return o")
            from_body = "\n".join(lines) + "\n"
        text = (
            "def to_avro(e):\n"
            f"    return {{{', '.join(to_parts)}}}\n"
            "def from_avro(d):\n" + from_body
        )
        code = compile(text, f"<choreo converters {cls.__qualname__}>", "exec")
        exec(code, self.namespace)  # noqa: S102 - source built from field names and templates
        to: Callable[[Any], dict[str, Any]] = self.namespace.pop("to_avro")
        frm: Callable[[Any], Any] = self.namespace.pop("from_avro")
        _TO[cls] = to
        _FROM[cls] = frm
        return to, frm

    def nested(self, cls: type[Any]) -> tuple[str, str]:
        if cls in _TO:
            to, frm = _TO[cls], _FROM[cls]
        else:
            to, frm = _Builder().build(cls)
        return self.name(to, "T"), self.name(frm, "F")

    def to_expr(self, hint: Any, v: str, depth: int) -> str:  # noqa: PLR0911 - one per shape
        """Return a Python expression converting value ``v`` of type ``hint`` to Avro."""
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return f"{self.nested(hint)[0]}({v})"
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return f"{v}.value"
        if hint is _dt.datetime:
            return f"_dt_to_ms({v})"
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:
                inner = self.to_expr(members[0], v, depth)
                return v if inner == v else f"(None if {v} is None else {inner})"
            if all(self.to_expr(a, "_", depth) == "_" for a in members):
                return v
            return f"{self.name(self.union_to(members), 'U')}({v})"
        if origin in (list, tuple, Sequence, typing.Sequence) and args:
            item_hint = args[0]
            x = f"x{depth}"
            inner = self.to_expr(item_hint, x, depth + 1)
            return f"list({v})" if inner == x else f"[{inner} for {x} in {v}]"
        if origin in (dict, Mapping, typing.Mapping) and len(args) == 2:
            x, k = f"x{depth}", f"k{depth}"
            inner = self.to_expr(args[1], x, depth + 1)
            return f"dict({v})" if inner == x else f"{{{k}: {inner} for {k}, {x} in {v}.items()}}"
        return v

    def from_expr(  # noqa: PLR0911 - one branch per shape
        self, hint: Any, v: str, depth: int, *, prebuilt: bool = False
    ) -> str:
        """Return a Python expression converting Avro value ``v`` to type ``hint``.

        ``prebuilt``: nested records were already built into their classes (by record
        builders), so only containers, enums and datetimes remain to convert.
        """
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return v if prebuilt else f"{self.nested(hint)[1]}({v})"
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return f"{self.name(hint, 'E')}({v})"
        if hint is _dt.datetime:
            return f"_ms_to_dt({v})"
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:
                inner = self.from_expr(members[0], v, depth, prebuilt=prebuilt)
                return v if inner == v else f"(None if {v} is None else {inner})"
            if all(self.from_expr(a, "_", depth, prebuilt=prebuilt) == "_" for a in members):
                return v
            return f"{self.name(self.union_from(members, prebuilt=prebuilt), 'U')}({v})"
        if origin in (list, tuple, Sequence, typing.Sequence) and args:
            x = f"x{depth}"
            inner = self.from_expr(args[0], x, depth + 1, prebuilt=prebuilt)
            if origin is list:
                return f"list({v})" if inner == x else f"[{inner} for {x} in {v}]"
            return f"tuple({v})" if inner == x else f"tuple([{inner} for {x} in {v}])"
        if origin in (dict, Mapping, typing.Mapping) and len(args) == 2:
            x, k = f"x{depth}", f"k{depth}"
            inner = self.from_expr(args[1], x, depth + 1, prebuilt=prebuilt)
            return v if inner == x else f"{{{k}: {inner} for {k}, {x} in {v}.items()}}"
        return v

    def union_to(self, members: list[Any]) -> Callable[[Any], Any]:
        classes = [m for m in members if isinstance(m, type) and dataclasses.is_dataclass(m)]
        enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]

        def convert(value: Any) -> Any:
            if type(value) in classes:
                return to_avro(value)
            if isinstance(value, enum.Enum) and type(value) in enums:
                return value.value
            if isinstance(value, _dt.datetime):
                return _datetime_to_ms(value)
            return value

        return convert

    def union_from(self, members: list[Any], *, prebuilt: bool = False) -> Callable[[Any], Any]:
        enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
        wants_datetime = _dt.datetime in members
        classes = [m for m in members if isinstance(m, type) and dataclasses.is_dataclass(m)]
        if prebuilt:
            classes = []
        shapes = []
        for cls in classes:
            fields = dataclasses.fields(cls)
            allowed = frozenset(avro_field_name(f) for f in fields)
            required = frozenset(
                avro_field_name(f)
                for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            shapes.append((cls, required, allowed))

        def convert(value: Any) -> Any:
            if isinstance(value, Mapping):
                keys = value.keys()
                for cls, required, allowed in shapes:
                    if required <= keys <= allowed:
                        return from_avro(cast(Any, cls), value)
            elif isinstance(value, str):
                for enum_class in enums:
                    try:
                        return enum_class(value)
                    except ValueError:
                        continue
            elif wants_datetime and isinstance(value, int) and not isinstance(value, bool):
                return _ms_to_datetime(value)
            return value

        return convert

    def record_builder(self, cls: type[Any], record: Mapping[str, Any]) -> Callable[..., Any]:
        """Return a function building ``cls`` from ``record``'s field values, positionally."""
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        position = {f["name"]: i for i, f in enumerate(record["fields"])}
        params = ", ".join(f"a{i}" for i in range(len(record["fields"])))
        values = []
        for field in fields:
            index = position[avro_field_name(field)]
            values.append(self.from_expr(hints.get(field.name, Any), f"a{index}", 1, prebuilt=True))
        cls_name = self.name(cls, "C")
        setters = _slot_setters(cls, fields)
        if setters is None:
            args = ", ".join(f"{f.name}={v}" for f, v in zip(fields, values, strict=True))
            body = f"    return {cls_name}({args})\n"
        else:
            lines = [f"    o = _new({cls_name})"]
            for value, setter in zip(values, setters, strict=True):
                lines.append(f"    {self.name(setter, 'S')}(o, {value})")
            body = "\n".join([*lines, "    return o"]) + "\n"
        text = f"def build({params}):\n{body}"
        code = compile(text, f"<choreo record builder {cls.__qualname__}>", "exec")
        exec(code, self.namespace)  # noqa: S102 - source built from field names and templates
        builder: Callable[..., Any] = self.namespace.pop("build")
        return builder


def record_builders(cls: type[Event], schema: Mapping[str, Any]) -> dict[str, Callable[..., Any]]:
    """Return, by record full name, functions building ``cls`` and its nested dataclasses.

    ``schema`` is the reader schema of ``cls`` (self-contained). Each function takes the
    record's field values positionally in schema order (see
    :class:`choreo.avro.compiler.RecordBuilders`); fields the class lacks are ignored.
    """
    from choreo.avro.model import collect_named

    named = collect_named(schema)
    pairs: dict[str, type[Any]] = {}
    _pair_records(cls, schema, named, pairs)
    builder = _Builder()
    return {name: builder.record_builder(klass, named[name]) for name, klass in pairs.items()}


def _pair_records(  # noqa: PLR0912 - one branch per Avro type
    hint: Any,
    schema: Any,
    named: Mapping[str, dict[str, Any]],
    pairs: dict[str, type[Any]],
) -> None:
    """Record which dataclass stands for which record of ``schema``, following type hints."""
    from choreo.avro.model import PRIMITIVES

    if isinstance(schema, str) and schema not in PRIMITIVES:
        schema = named[schema]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(schema, list):
        members = (
            [a for a in args if a is not type(None)]
            if origin in (typing.Union, types.UnionType)
            else [hint]
        )
        records = [named.get(b, b) if isinstance(b, str) else b for b in schema]
        for member in members:
            for branch in records:
                if isinstance(branch, dict) and _stands_for(member, branch):
                    _pair_records(member, branch, named, pairs)
                    break
            else:
                for branch in records:
                    if not (isinstance(branch, dict) and branch["type"] in ("record", "error")):
                        _pair_records(member, branch, named, pairs)
        return
    if not isinstance(schema, dict):
        return
    kind = schema["type"]
    if kind == "array" and args:
        _pair_records(args[0], schema["items"], named, pairs)
    elif kind == "map" and len(args) == 2:
        _pair_records(args[1], schema["values"], named, pairs)
    elif kind in ("record", "error") and isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if schema["name"] in pairs:
            return
        pairs[schema["name"]] = hint
        hints = typing.get_type_hints(hint)
        by_avro = {avro_field_name(f): f.name for f in dataclasses.fields(hint)}
        for field in schema["fields"]:
            attr = by_avro.get(field["name"])
            if attr is not None:
                _pair_records(hints.get(attr, Any), field["type"], named, pairs)


def _stands_for(hint: Any, record: Mapping[str, Any]) -> bool:
    if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        return False
    if record["type"] not in ("record", "error"):
        return False
    own = getattr(hint, "__avro_name__", None)
    if own is not None:
        return bool(own == record["name"])
    return bool(hint.__name__ == record["name"].rpartition(".")[2])


# --- checking classes against schemas -------------------------------------------------


def check_event_class(cls: type[Event], registry: SchemaRegistry) -> None:
    """Raise :class:`SchemaError` when ``cls`` and its schema (latest version) disagree.

    A class field missing from the schema, a required schema field (no default) missing
    from the class, or a field whose Python type cannot hold the Avro type is an error;
    nested dataclasses are checked against their nested records.
    """
    from choreo.errors import UnknownEventError

    name = event_type_of(cls)
    try:
        schema = registry.get(name)
    except UnknownEventError as exc:
        raise SchemaError(f"{cls.__qualname__}: no schema named `{name}`") from exc
    if not _is_dataclass_type(cls):
        raise SchemaError(f"{cls.__qualname__} is not a dataclass")
    from choreo.avro.model import collect_named

    problems: list[str] = []
    _check_record(cls, schema.schema, collect_named(schema.schema), problems, set())
    if problems:
        raise SchemaError(
            f"{cls.__qualname__} does not match {name} v{schema.version}: " + "; ".join(problems)
        )


def _check_record(
    cls: type[Any],
    record: Mapping[str, Any],
    named: Mapping[str, dict[str, Any]],
    problems: list[str],
    seen: set[tuple[type, str]],
) -> None:
    key = (cls, record["name"])
    if key in seen:
        return
    seen.add(key)
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError) as exc:
        problems.append(f"{cls.__qualname__}: cannot read type hints ({exc})")
        return
    schema_fields = {f["name"]: f for f in record["fields"]}
    class_fields = {avro_field_name(f): f for f in dataclasses.fields(cls)}
    for avro_name, field in class_fields.items():
        if avro_name not in schema_fields:
            problems.append(f"field `{field.name}` is not in the schema")
            continue
        problem = _hint_problem(
            hints.get(field.name, Any), schema_fields[avro_name]["type"], named, problems, seen
        )
        if problem:
            problems.append(f"field `{field.name}`: {problem}")
    for avro_name, schema_field in schema_fields.items():
        if avro_name not in class_fields and "default" not in schema_field:
            problems.append(f"required schema field `{avro_name}` is missing from the class")


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


def _hint_problem(  # noqa: PLR0911, PLR0912 - one branch per Avro type reads best here
    hint: Any,
    schema: Any,
    named: Mapping[str, dict[str, Any]],
    problems: list[str],
    seen: set[tuple[type, str]],
) -> str | None:
    """Return why a Python type hint cannot hold values of an Avro type, or None."""
    from choreo.avro.model import PRIMITIVES, type_label

    if hint is Any or isinstance(hint, TypeVar):
        return None
    if isinstance(schema, str) and schema not in PRIMITIVES:
        schema = named[schema]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return None
    if origin in (typing.Union, types.UnionType):
        branches = schema if isinstance(schema, list) else [schema]
        for member in args:
            if not any(_hint_problem(member, b, named, [], seen) is None for b in branches):
                return f"{member!r} is not among {type_label(schema)}"
        return None
    if isinstance(schema, list):
        non_null = [b for b in schema if b != "null"]
        if len(non_null) == len(schema) - 1 and len(non_null) == 1:
            return f"the schema allows null ({type_label(schema)}); declare `X | None`"
        return (
            _hint_problem(hint, non_null[0], named, problems, seen) if len(non_null) == 1 else None
        )
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind in PRIMITIVES or kind == "fixed":
        allowed = _PRIMITIVE_HINTS[kind]
        if (
            isinstance(hint, type)
            and issubclass(hint, allowed)
            and not (hint is bool and kind != "boolean")
        ):
            return None
        if kind == "string" and isinstance(hint, type) and issubclass(hint, enum.Enum):
            return None
        return f"{getattr(hint, '__name__', hint)} cannot hold Avro {kind}"
    if kind == "enum":
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            values = {m.value for m in hint}
            missing = [s for s in schema["symbols"] if s not in values]
            if missing:
                return f"enum {hint.__name__} lacks symbols {missing}"
            return None
        if hint is str:
            return None
        return f"{getattr(hint, '__name__', hint)} cannot hold enum {schema['name']}"
    if kind == "array":
        if origin in (list, tuple, Sequence, typing.Sequence) and args:
            return _hint_problem(args[0], schema["items"], named, problems, seen)
        return f"{hint!r} cannot hold {type_label(schema)}"
    if kind == "map":
        if origin in (dict, Mapping, typing.Mapping) and len(args) == 2:
            return _hint_problem(args[1], schema["values"], named, problems, seen)
        return f"{hint!r} cannot hold {type_label(schema)}"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        _check_record(hint, schema, named, problems, seen)
        return None
    return f"{hint!r} cannot hold record {schema['name']}"


def is_event_class(value: object) -> bool:
    """Return True when ``value`` is a dataclass subclassing :class:`Event`."""
    return (
        isinstance(value, type)
        and issubclass(value, Event)
        and _is_dataclass_type(value)
        and hasattr(value, "__avro_name__")
    )


def _is_dataclass_type(value: object) -> bool:
    return isinstance(value, type) and dataclasses.is_dataclass(value)


def python_identifier(name: str) -> str:
    """Return ``name`` made usable as a Python identifier (``class`` → ``class_``)."""
    return f"{name}_" if keyword.iskeyword(name) else name
