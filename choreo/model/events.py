"""Typed events: Python classes that stand for Avro record schemas.

An event class is a frozen dataclass that subclasses :class:`Event` and names its Avro
schema in ``__avro_name__`` (a namespaced full name such as ``shop.orders.OrderCreated``).
``choreo schemas codegen`` writes such classes from ``schemas/``; users may also write them
by hand, and choreo checks them against the schema at start-up
(:func:`choreo.avro.classes.check_event_class`).

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
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from choreo.model.slots import fast_frozen_init, shell_of, slot_setters

__all__ = [
    "Event",
    "SagaTimedOut",
    "avro_field_name",
    "converters",
    "event_type_of",
    "field_readers",
    "from_avro",
    "positional_builder",
    "to_avro",
]

E = TypeVar("E", bound="Event")


class Event:
    """Base class of typed events; subclasses are dataclasses naming their Avro schema.

    A subclass that is a frozen, slotted dataclass (``@dataclass(frozen=True,
    slots=True)``) with the generated ``__init__`` gets an equal ``__init__`` that stores
    its fields on a same-layout shell instead of calling ``object.__setattr__`` per field
    (:func:`~choreo.model.slots.fast_frozen_init`): same parameters, same instance, same
    errors, at about half the cost of building the event. Any other subclass keeps its
    ``__init__``.
    """

    __slots__ = ()
    __avro_name__: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a frozen, slotted dataclass subclass its shell-building ``__init__``."""
        super().__init_subclass__(**kwargs)
        # dataclass(slots=True) re-creates the class with its generated methods: that is
        # when this sees them (the first, plain class has none and is left alone)
        fast = fast_frozen_init(cls)
        if fast is not None:
            cls.__init__ = fast  # type: ignore[method-assign]

    __init_subclass__.__choreo_shell_safe__ = True  # type: ignore[attr-defined]


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


def field_readers(cls: type[Any]) -> dict[str, tuple[str, Callable[[Any], Any] | None]]:
    """Return, by Avro field name, the attribute of ``cls`` holding it and its converter.

    The converter turns the attribute's value into the Avro datum's, as :func:`to_avro`
    does for that field (None: the value is used as is). Lets an encoder read an event's
    attributes directly instead of the dict :func:`to_avro` would build.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{getattr(cls, '__qualname__', cls)!r} is not a dataclass")
    builder = _Builder()
    hints = typing.get_type_hints(cls)
    readers: dict[str, tuple[str, Callable[[Any], Any] | None]] = {}
    for field in dataclasses.fields(cls):
        if not (field.init or field.name in hints):
            continue
        expr = builder.to_expr(hints.get(field.name, Any), "v", 1)
        convert = None
        if expr != "v":
            code = compile(f"def convert(v):\n    return {expr}\n", "<choreo field>", "exec")
            exec(code, builder.namespace)  # noqa: S102 - built from templates, as in build()
            convert = builder.namespace.pop("convert")
        readers[avro_field_name(field)] = (field.name, convert)
    return readers


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


def _compile(cls: type[Any]) -> _Compiled:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{getattr(cls, '__qualname__', cls)!r} is not a dataclass")
    if cls in _TO:
        return _Compiled(_TO[cls], _FROM[cls])
    builder = _Builder()
    to, frm = builder.build(cls)
    return _Compiled(to, frm)


class _Shape(enum.Enum):
    """How a field's type hint converts to and from Avro (see :func:`_shape`)."""

    RECORD = "record"
    ENUM = "enum"
    DATETIME = "datetime"
    UNION = "union"
    SEQUENCE = "sequence"
    MAPPING = "mapping"
    PLAIN = "plain"


def _shape(hint: Any) -> _Shape:
    """Return how values of a type hint convert: a record, an enum, a container, or as is."""
    if isinstance(hint, type):
        return _class_shape(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _Shape.UNION
    if origin in (list, tuple, Sequence, typing.Sequence) and args:
        return _Shape.SEQUENCE
    if origin in (dict, Mapping, typing.Mapping) and len(args) == 2:
        return _Shape.MAPPING
    return _Shape.PLAIN


def _class_shape(hint: type) -> _Shape:
    """Return how values of a class convert: a record, an enum, a datetime, or as is."""
    if dataclasses.is_dataclass(hint):
        return _Shape.RECORD
    if issubclass(hint, enum.Enum):
        return _Shape.ENUM
    return _Shape.DATETIME if hint is _dt.datetime else _Shape.PLAIN


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
        setters = slot_setters(cls, fields)
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

    def to_expr(self, hint: Any, v: str, depth: int) -> str:
        """Return a Python expression converting value ``v`` of type ``hint`` to Avro."""
        shape = _shape(hint)
        if shape is _Shape.PLAIN:
            return v
        if shape is _Shape.RECORD:
            return f"{self.nested(hint)[0]}({v})"
        if shape is _Shape.ENUM:
            return f"{v}.value"
        if shape is _Shape.DATETIME:
            return f"_dt_to_ms({v})"
        if shape is _Shape.UNION:
            return self.union_to_expr(typing.get_args(hint), v, depth)
        return self.container_to_expr(hint, shape, v, depth)

    def container_to_expr(self, hint: Any, shape: _Shape, v: str, depth: int) -> str:
        """Return the to-Avro expression of a sequence (a list) or a mapping (a dict)."""
        x, k = f"x{depth}", f"k{depth}"
        if shape is _Shape.SEQUENCE:
            inner = self.to_expr(typing.get_args(hint)[0], x, depth + 1)
            return f"list({v})" if inner == x else f"[{inner} for {x} in {v}]"
        inner = self.to_expr(typing.get_args(hint)[1], x, depth + 1)
        return f"dict({v})" if inner == x else f"{{{k}: {inner} for {k}, {x} in {v}.items()}}"

    def union_to_expr(self, args: tuple[Any, ...], v: str, depth: int) -> str:
        """Return the to-Avro expression of a union: ``X | None``, or by the value's type."""
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            inner = self.to_expr(members[0], v, depth)
            return v if inner == v else f"(None if {v} is None else {inner})"
        if all(self.to_expr(a, "_", depth) == "_" for a in members):
            return v
        return f"{self.name(self.union_to(members), 'U')}({v})"

    def from_expr(self, hint: Any, v: str, depth: int, *, prebuilt: bool = False) -> str:
        """Return a Python expression converting Avro value ``v`` to type ``hint``.

        ``prebuilt``: nested records were already built into their classes (by record
        builders), so only containers, enums and datetimes remain to convert.
        """
        shape = _shape(hint)
        if shape is _Shape.PLAIN or (shape is _Shape.RECORD and prebuilt):
            return v
        if shape is _Shape.RECORD:
            return f"{self.nested(hint)[1]}({v})"
        if shape is _Shape.ENUM:
            return f"{self.name(hint, 'E')}({v})"
        if shape is _Shape.DATETIME:
            return f"_ms_to_dt({v})"
        if shape is _Shape.UNION:
            return self.union_from_expr(typing.get_args(hint), v, depth, prebuilt=prebuilt)
        return self.container_from_expr(hint, shape, v, depth, prebuilt=prebuilt)

    def container_from_expr(
        self, hint: Any, shape: _Shape, v: str, depth: int, *, prebuilt: bool
    ) -> str:
        """Return the from-Avro expression of a sequence (a tuple, or a list) or a mapping."""
        x, k = f"x{depth}", f"k{depth}"
        if shape is _Shape.MAPPING:
            inner = self.from_expr(typing.get_args(hint)[1], x, depth + 1, prebuilt=prebuilt)
            return v if inner == x else f"{{{k}: {inner} for {k}, {x} in {v}.items()}}"
        inner = self.from_expr(typing.get_args(hint)[0], x, depth + 1, prebuilt=prebuilt)
        if typing.get_origin(hint) is list:
            return f"list({v})" if inner == x else f"[{inner} for {x} in {v}]"
        return f"tuple({v})" if inner == x else f"tuple([{inner} for {x} in {v}])"

    def union_from_expr(self, args: tuple[Any, ...], v: str, depth: int, *, prebuilt: bool) -> str:
        """Return the from-Avro expression of a union: ``X | None``, or by the datum's shape."""
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            inner = self.from_expr(members[0], v, depth, prebuilt=prebuilt)
            return v if inner == v else f"(None if {v} is None else {inner})"
        if all(self.from_expr(a, "_", depth, prebuilt=prebuilt) == "_" for a in members):
            return v
        return f"{self.name(self.union_from(members, prebuilt=prebuilt), 'U')}({v})"

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

    def record_builder(self, cls: type[Any], field_names: Sequence[str]) -> Callable[..., Any]:
        """Return a function building ``cls`` from the named fields' values, positionally."""
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        position = {name: i for i, name in enumerate(field_names)}
        params = ", ".join(f"a{i}" for i in range(len(field_names)))
        values = []
        for field in fields:
            index = position[avro_field_name(field)]
            values.append(self.from_expr(hints.get(field.name, Any), f"a{index}", 1, prebuilt=True))
        cls_name = self.name(cls, "C")
        setters = slot_setters(cls, fields)
        shell = None if setters is None else shell_of(cls, fields)
        if setters is None:
            args = ", ".join(f"{f.name}={v}" for f, v in zip(fields, values, strict=True))
            body = f"    return {cls_name}({args})\n"
        elif shell is not None:  # plain slot stores on a shell, then the class (see shell_of)
            lines = [f"    o = _new({self.name(shell, 'H')})"]
            lines += [f"    o.{f.name} = {v}" for f, v in zip(fields, values, strict=True)]
            body = "\n".join([*lines, f"    o.__class__ = {cls_name}", "    return o"]) + "\n"
        else:
            lines = [f"    o = _new({cls_name})"]
            for value, setter in zip(values, setters, strict=True):
                lines.append(f"    {self.name(setter, 'S')}(o, {value})")
            body = "\n".join([*lines, "    return o"]) + "\n"
        text = f"def build({params}):\n{body}"
        code = compile(text, f"<choreo record builder {cls.__qualname__}>", "exec")
        exec(code, self.namespace)  # noqa: S102 - source built from field names and templates
        builder: Callable[..., Any] = self.namespace.pop("build")
        plain = [f"a{position[avro_field_name(f)]}" for f in fields]
        if shell is not None and values == plain:  # no conversion: a decoder may inline it
            stores = tuple((f.name, position[avro_field_name(f)]) for f in fields)
            builder.__choreo_slots__ = (shell, cls, stores)  # type: ignore[attr-defined]
        return builder


def positional_builder(cls: type[Any], field_names: Sequence[str]) -> Callable[..., Any]:
    """Return a function building ``cls`` from values given in ``field_names``' order.

    ``field_names`` are Avro field names (a record schema's, in schema order); the function
    takes one value per name, positionally, and ignores those the class lacks. Nested
    records must already be built into their classes (containers, enums and datetimes
    are still converted): :func:`choreo.avro.classes.record_builders` pairs each record
    of a schema with its class and builds one function per record this way.

    When the function is plain slot stores on a same-layout shell (see
    :func:`~choreo.model.slots.shell_of`) and no value needs a conversion, it carries
    ``__choreo_slots__ = (shell, cls, ((attribute, position), ...))`` so that generated
    decoders can make the same stores inline, without a call per record.
    """
    return _Builder().record_builder(cls, field_names)
