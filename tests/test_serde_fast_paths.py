"""The serde's per-class encoders and per-type decoders equal encode and decode exactly.

:meth:`EventSerde.encoder_for` writes an event's attributes without building the datum
dict; :meth:`EventSerde.decoder_for` skips the decoder lookup for payloads written with
the reader's own schema. Both are the worker's hot path, so these tests pin them to the
general path: the same bytes, the same values, the same errors with the same messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import given, settings
from hypothesis import strategies as st

from choreo.avro import LocalSchemaRegistry, load_directory
from choreo.avro.classes import record_builders
from choreo.avro.codec import SingleObjectCodec
from choreo.avro.compiler import CompileLimits, RecordBuilders, compile_decoder
from choreo.avro.confluent import ConfluentCodec
from choreo.avro.serde import EventSerde
from choreo.errors import DecodeError, EncodeError, UnknownEventError
from choreo.model.events import Event, SagaTimedOut, field_readers, to_avro
from choreo.model.slots import shell_of
from services import events as shop

REPO = Path(__file__).resolve().parent.parent
ALL = [
    c
    for c in vars(shop).values()
    if isinstance(c, type) and issubclass(c, Event) and c is not Event
]

SHAPES = {
    "type": "record",
    "name": "Shapes",
    "namespace": "t.fast",
    "fields": [
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]}},
        {"name": "tags", "type": {"type": "map", "values": "int"}},
        {"name": "class", "type": "string"},
        {"name": "ratio", "type": "double"},
        {"name": "small", "type": "float"},
        {"name": "flag", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {
            "name": "maybe",
            "type": [
                "null",
                {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]},
            ],
            "default": None,
        },
        {"name": "colors", "type": {"type": "array", "items": "Color"}, "default": []},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "absent", "type": "string", "default": "from the schema"},
    ],
}


class Color(enum.StrEnum):
    """Colors."""

    RED = "RED"
    BLUE = "BLUE"


@dataclass(frozen=True, slots=True)
class Inner:
    """A nested record."""

    x: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Shapes(Event):
    """Every conversion: datetime, enums, maps, a keyword name, nested and optional records.

    The schema's ``absent`` field (with a default) has no attribute here.
    """

    __avro_name__: ClassVar[str] = "t.fast.Shapes"
    when: dt.datetime
    color: Color
    tags: Mapping[str, int]
    class_: str = field(metadata={"avro_name": "class"})
    ratio: float
    small: float
    flag: bool
    blob: bytes
    maybe: Inner | None = None
    colors: Sequence[Color] = ()
    note: str | None = None


def _registry() -> LocalSchemaRegistry:
    registry = load_directory(REPO / "schemas")
    registry.register(SHAPES)
    return registry


def _codecs(registry: LocalSchemaRegistry, max_size: int = 1 << 20) -> list[Any]:
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    return [SingleObjectCodec(registry, max_size=max_size), ConfluentCodec(client, registry)]


REGISTRY = _registry()
SERDES = [EventSerde(codec, [*ALL, SagaTimedOut, Shapes]) for codec in _codecs(REGISTRY)]

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
SHAPES_VALUES = st.builds(
    Shapes,
    when=st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    color=st.sampled_from(Color),
    tags=st.dictionaries(st.text(max_size=8), INT32, max_size=4),
    class_=st.text(max_size=20),
    ratio=st.floats(allow_nan=False),
    small=st.floats(width=32, allow_nan=False),
    flag=st.booleans(),
    blob=st.binary(max_size=40),
    maybe=st.none() | st.builds(Inner, x=INT32),
    colors=st.lists(st.sampled_from(Color), max_size=4).map(tuple),
    note=st.none() | st.text(max_size=10),
)


def _outcome(call: Any) -> tuple[str, Any]:
    """Return ("ok", result) or (exception type name, message) of ``call()``."""
    try:
        return "ok", call()
    except Exception as exc:  # the point is comparing whatever is raised
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("serde", SERDES, ids=["single-object", "confluent"])
@settings(max_examples=150, deadline=None)
@given(event=SHAPES_VALUES)
def test_encoder_for_writes_the_bytes_of_the_datum(serde: EventSerde, event: Shapes) -> None:
    """The attribute encoder writes codec.encode(name, to_avro(event))'s bytes; they decode back."""
    fast = serde.encoder_for(Shapes)
    expected = serde.codec.encode("t.fast.Shapes", to_avro(event))
    assert fast(event) == expected == serde.encode(event)
    assert serde.decoder_for("t.fast.Shapes")(expected) == serde.decode("t.fast.Shapes", expected)


def test_the_attribute_encoder_is_the_one_in_use() -> None:
    """Shapes (every conversion) is written from its attributes, the absent field by default."""
    serde = SERDES[0]
    source = serde.encoder_for(Shapes).__choreo_source__  # type: ignore[attr-defined]
    assert "datum.class_" in source and "datum.when" in source and "absent" not in source
    readers = field_readers(Shapes)
    assert readers["class"] == ("class_", None) and readers["when"][1] is not None
    assert readers["ratio"] == ("ratio", None)


def _shapes(**changes: Any) -> Shapes:
    values: dict[str, Any] = {
        "when": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        "color": Color.RED,
        "tags": {"a": 1},
        "class_": "k",
        "ratio": 0.5,
        "small": 1.5,
        "flag": True,
        "blob": b"\x00",
    }
    values.update(changes)
    return Shapes(**values)


BAD = [
    {"tags": {"a": "not an int"}},
    {"tags": {"a": 2**31}},
    {"class_": 7},
    {"class_": "\ud800"},  # not encodable as UTF-8
    {"flag": 1},
    {"blob": "text"},
    {"small": 1e300},
    {"ratio": "0.5"},
    {"maybe": Inner(x=2**40)},
    {"maybe": "not a record"},
    {"colors": ("GREEN",)},
    {"note": 5},
    {"color": "PURPLE"},
    {"when": "yesterday"},
]


@pytest.mark.parametrize("serde", SERDES, ids=["single-object", "confluent"])
@pytest.mark.parametrize("changes", BAD, ids=[next(iter(c)) + str(i) for i, c in enumerate(BAD)])
def test_a_value_that_does_not_fit_fails_as_encode_does(
    serde: EventSerde, changes: dict[str, Any]
) -> None:
    """Same exception type and message as encoding the datum, for every kind of misfit."""
    event = _shapes(**changes)
    fast = _outcome(lambda: serde.encoder_for(Shapes)(event))
    general = _outcome(lambda: serde.codec.encode("t.fast.Shapes", to_avro(event)))
    assert fast == general
    assert fast[0] != "ok"


def test_the_size_limit_applies_with_the_same_message() -> None:
    """A payload over max_size is an EncodeError naming the size, on both paths."""
    codec = SingleObjectCodec(REGISTRY, max_size=64)
    serde = EventSerde(codec, [Shapes])
    event = _shapes(blob=b"x" * 100)
    with pytest.raises(EncodeError) as fast:
        serde.encoder_for(Shapes)(event)
    with pytest.raises(EncodeError) as general:
        codec.encode("t.fast.Shapes", to_avro(event))
    assert str(fast.value) == str(general.value) and "exceeds the limit of 64" in str(fast.value)


def test_a_class_lacking_an_optional_schema_field_writes_its_default() -> None:
    """A v1-style class without coupon_code encodes the schema default, as the dict path does."""

    @dataclass(frozen=True)
    class CreatedV1Style(Event):
        __avro_name__: ClassVar[str] = "shop.orders.OrderCreated"
        order_id: str
        customer_id: str
        items: Sequence[shop.LineItem]
        total_cents: int
        currency: str
        created_at: int

    serde = EventSerde(SingleObjectCodec(REGISTRY), [CreatedV1Style])
    line = shop.LineItem(sku="s", quantity=1, unit_price_cents=2)
    event = CreatedV1Style("o", "c", (line,), 2, "EUR", 1)
    expected = serde.codec.encode("shop.orders.OrderCreated", to_avro(event))
    assert serde.encoder_for(CreatedV1Style)(event) == expected


@pytest.mark.parametrize("serde", SERDES, ids=["single-object", "confluent"])
def test_decoder_for_equals_decode_on_good_and_bad_payloads(serde: EventSerde) -> None:
    """Latest-schema, older-schema, foreign and broken payloads: same value or same error."""
    name = "shop.orders.OrderCreated"
    line = shop.LineItem(sku="s", quantity=1, unit_price_cents=2)
    event = shop.OrderCreated(
        order_id="o", customer_id="c", items=(line,), total_cents=2, currency="EUR", created_at=1
    )
    good = serde.encode(event)
    v1 = serde.codec.encode(
        name,
        {
            "order_id": "o",
            "customer_id": "c",
            "items": [],
            "total_cents": 0,
            "currency": "EUR",
            "created_at": 1,
        },
        version=1,
    )
    other = serde.encode(
        SagaTimedOut(saga="s", correlation_id="c", step="a.b", deadline_ms=1, detected_at=2)
    )
    payloads: list[Any] = [
        good,
        bytearray(good),
        memoryview(good),
        v1,
        other,
        good[:-1],
        good + b"\x00",
        good[:5],
        b"",
        b"\x00" * 20,
        good[:10] + b"\xff" * 4,
        "not bytes",
    ]
    read = serde.decoder_for(name)
    for payload in payloads:
        fast = _outcome(lambda p=payload: read(p))
        general = _outcome(lambda p=payload: serde.decode(name, p))
        assert fast == general, payload
    assert read(good) == event and _outcome(lambda: read(good[:-1]))[0] == DecodeError.__name__


def test_the_size_limit_applies_to_decoder_for() -> None:
    """A payload over max_size is rejected before any work, on the fast path too."""
    codec = SingleObjectCodec(REGISTRY, max_size=16)
    serde = EventSerde(codec, [SagaTimedOut])
    big = SingleObjectCodec(REGISTRY).encode(
        "choreo.SagaTimedOut",
        {
            "saga": "s" * 20,
            "correlation_id": "c",
            "step": "a.b",
            "deadline_ms": 1,
            "detected_at": 2,
        },
    )
    with pytest.raises(DecodeError, match="exceeds 16"):
        serde.decoder_for("choreo.SagaTimedOut")(big)


def test_decoder_for_an_unknown_type_is_an_error() -> None:
    """As decode: UnknownEventError names the type."""
    with pytest.raises(UnknownEventError, match="nope"):
        SERDES[0].decoder_for("nope")


def test_decoded_events_are_frozen_instances_of_their_class() -> None:
    """Decoding fills a mutable shell and then gives it the class: the result is the class's."""
    serde = SERDES[0]
    event = _shapes(maybe=Inner(x=3), colors=(Color.BLUE,), note="n")
    decoded = serde.decoder_for("t.fast.Shapes")(serde.encode(event))
    assert type(decoded) is Shapes and type(decoded.maybe) is Inner
    assert decoded == event and hash(decoded.maybe) == hash(Inner(x=3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.class_ = "changed"  # type: ignore[misc]


def test_no_shell_for_a_class_whose_base_hooks_subclassing() -> None:
    """A base with __init_subclass__ would see the shell: such classes keep the slot setters."""
    seen: list[type] = []

    class Registering(Event):
        __slots__ = ()

        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            seen.append(cls)

    @dataclass(frozen=True, slots=True)
    class Hooked(Registering):
        x: int

    before = list(seen)
    assert shell_of(Hooked, list(dataclasses.fields(Hooked))) is None
    assert seen == before
    shell = shell_of(Inner, list(dataclasses.fields(Inner)))
    assert shell is not None and not dataclasses.is_dataclass(shell)


@settings(max_examples=300, deadline=None)
@given(event=SHAPES_VALUES, data=st.data())
def test_decoder_for_equals_decode_on_mangled_payloads(event: Shapes, data: st.DataObject) -> None:
    """Cut, extended or overwritten payloads: the same value or the same error as decode."""
    serde = SERDES[0]
    good = bytearray(serde.encode(event))
    at = data.draw(st.integers(min_value=0, max_value=len(good)))
    patch = data.draw(st.binary(max_size=6))
    mangled = bytes(data.draw(st.sampled_from([good[:at], good[:at] + patch, good + patch])))
    if len(patch) and at < len(good):
        mangled = bytes(good[:at] + patch + good[at + len(patch) :])
    read = serde.decoder_for("t.fast.Shapes")
    fast = _outcome(lambda: read(mangled))
    general = _outcome(lambda: serde.decode("t.fast.Shapes", mangled))
    assert repr(fast) == repr(general)  # repr: a mangled double may decode to NaN


def test_a_plain_record_is_built_inline_and_a_converted_one_by_its_builder() -> None:
    """A record whose values need no conversion gets its builder's slot stores inline.

    ``Inner`` (an int) is built by the decoder itself, with no call of its builder;
    ``Shapes`` (a datetime, an enum, a map) still calls its builder. Both decode to the
    event the general path gives.
    """
    builders = record_builders(Shapes, SHAPES)
    inner, outer = builders["t.fast.Inner"], builders["t.fast.Shapes"]
    assert getattr(outer, "__choreo_slots__", None) is None
    shell, cls, stores = inner.__choreo_slots__  # type: ignore[attr-defined]
    assert cls is Inner and shell is not Inner and stores == (("x", 0),)
    decoder = compile_decoder(SHAPES, builders=RecordBuilders(builders))
    source: str = decoder.__choreo_source__  # type: ignore[attr-defined]
    assert ".x = " in source and ".__class__ = " in source
    assert source.count("_B") == 1  # the one builder call left is Shapes's
    serde = SERDES[0]
    event = _shapes(maybe=Inner(x=-7), colors=(Color.RED,), note=None)
    data = serde.encode(event)
    decoded = decoder(data, 10)
    assert decoded == event == serde.decode("t.fast.Shapes", data)
    assert type(decoded.maybe) is Inner and hash(decoded.maybe) == hash(Inner(x=-7))


def test_reader_for_a_schema_over_the_compile_limits_fails_as_decode_does() -> None:
    """A schema whose reader cannot be compiled still gets a reader: decode()'s errors."""
    name = "choreo.SagaTimedOut"
    datum = {"saga": "s", "correlation_id": "c", "step": "a.b", "deadline_ms": 1, "detected_at": 2}
    codec = SingleObjectCodec(REGISTRY, compile_limits=CompileLimits(max_source_chars=200))
    full = SingleObjectCodec(REGISTRY)
    data = full.encode(name, datum)
    with pytest.raises(DecodeError) as fast:
        codec.reader_for(name)(data)
    with pytest.raises(DecodeError) as general:
        codec.decode(data, name)
    assert str(fast.value) == str(general.value) and "max_source_chars" in str(fast.value)
    assert full.reader_for(name)(bytearray(data)) == datum  # not bytes: through decode()
    assert full.reader_for(name) is full.reader_for(name)  # compiled once per codec
