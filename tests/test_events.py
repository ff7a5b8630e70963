"""Tests of typed events: to_avro/from_avro and checking classes against schemas."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

import choreo
from choreo.avro import LocalSchemaRegistry, load_directory
from choreo.avro.classes import check_event_class
from choreo.errors import SchemaError
from choreo.model.events import (
    Event,
    SagaTimedOut,
    event_type_of,
    from_avro,
    to_avro,
)
from services import events as shop

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry() -> LocalSchemaRegistry:
    """The example domain's schemas plus a test schema covering more shapes."""
    registry = load_directory(REPO / "schemas")
    registry.register(
        {
            "type": "record",
            "name": "Shapes",
            "namespace": "t",
            "fields": [
                {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {
                    "name": "color",
                    "type": {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]},
                },
                {"name": "tags", "type": {"type": "map", "values": "int"}},
                {"name": "class", "type": "string"},
                {
                    "name": "maybe",
                    "type": [
                        "null",
                        {
                            "type": "record",
                            "name": "Inner",
                            "fields": [{"name": "x", "type": "int"}],
                        },
                    ],
                    "default": None,
                },
                {"name": "colors", "type": {"type": "array", "items": "Color"}, "default": []},
            ],
        }
    )
    return registry


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
    """A hand-written class using datetime, enums, maps, keywords and optional records."""

    __avro_name__: ClassVar[str] = "t.Shapes"
    when: dt.datetime
    color: Color
    tags: Mapping[str, int]
    class_: str = field(metadata={"avro_name": "class"})
    maybe: Inner | None = None
    colors: Sequence[Color] = ()


class EmailOnly(enum.StrEnum):
    """A channel enum lacking SMS and PUSH."""

    EMAIL = "EMAIL"


@dataclass(frozen=True)
class BadLine:
    """A line item with a wrongly typed sku."""

    sku: int
    quantity: int
    unit_price_cents: int


def test_order_created_round_trip(registry: LocalSchemaRegistry) -> None:
    """A generated event converts to the Avro datum and back, arrays as tuples."""
    event = shop.OrderCreated(
        order_id="o",
        customer_id="c",
        total_cents=3,
        currency="EUR",
        created_at=5,
        items=[shop.LineItem(sku="a", quantity=1, unit_price_cents=3)],
    )
    datum = to_avro(event)
    assert datum == {
        "order_id": "o",
        "customer_id": "c",
        "total_cents": 3,
        "currency": "EUR",
        "created_at": 5,
        "coupon_code": None,
        "items": [{"sku": "a", "quantity": 1, "unit_price_cents": 3}],
    }
    back = from_avro(shop.OrderCreated, datum)
    assert back.items == (shop.LineItem(sku="a", quantity=1, unit_price_cents=3),)
    assert dataclasses.replace(event, items=tuple(event.items)) == back


def test_hand_written_shapes_round_trip(registry: LocalSchemaRegistry) -> None:
    """datetime, enums, maps, keyword-named and optional nested fields convert both ways."""
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    event = Shapes(
        when=when,
        color=Color.BLUE,
        tags={"a": 1},
        class_="k",
        maybe=Inner(x=2),
        colors=(Color.RED,),
    )
    datum = to_avro(event)
    assert datum == {
        "when": 1704164645678,
        "color": "BLUE",
        "tags": {"a": 1},
        "class": "k",
        "maybe": {"x": 2},
        "colors": ["RED"],
    }
    assert type(datum["color"]) is str
    back = from_avro(Shapes, datum)
    assert back == event and isinstance(back.color, Color)
    check_event_class(Shapes, registry)


def test_from_avro_fills_class_defaults() -> None:
    """Fields with defaults may be absent from the datum."""
    event = from_avro(Shapes, {"when": 0, "color": "RED", "tags": {}, "class": "c"})
    assert event.maybe is None and event.colors == ()


def test_generated_classes_match_their_schemas(registry: LocalSchemaRegistry) -> None:
    """Every generated class in services/events.py passes check_event_class."""
    classes = [
        c
        for c in vars(shop).values()
        if isinstance(c, type) and issubclass(c, Event) and c is not Event
    ]
    assert len(classes) == 37  # 15 of the choreographed saga, 22 of the orchestrated one
    for cls in classes:
        check_event_class(cls, registry)


def test_saga_timed_out_matches_the_builtin_schema(registry: LocalSchemaRegistry) -> None:
    """choreo.SagaTimedOut (exported by choreo) matches choreo/avro/builtin."""
    assert choreo.SagaTimedOut is SagaTimedOut
    assert event_type_of(SagaTimedOut) == "choreo.SagaTimedOut"
    check_event_class(SagaTimedOut, registry)


def test_check_rejects_a_field_missing_from_the_schema(registry: LocalSchemaRegistry) -> None:
    """A class field the schema lacks is an error at start-up."""

    @dataclass(frozen=True)
    class Completed(Event):
        __avro_name__: ClassVar[str] = "shop.orders.OrderCompleted"
        order_id: str
        surprise: int

    with pytest.raises(SchemaError, match="field `surprise` is not in the schema"):
        check_event_class(Completed, registry)


def test_check_rejects_a_missing_required_schema_field(registry: LocalSchemaRegistry) -> None:
    """A required schema field the class lacks is an error; an optional one is not."""

    @dataclass(frozen=True)
    class Failed(Event):
        __avro_name__: ClassVar[str] = "shop.orders.OrderFailed"
        order_id: str

    with pytest.raises(SchemaError, match="required schema field `reason` is missing"):
        check_event_class(Failed, registry)

    @dataclass(frozen=True, kw_only=True)
    class CreatedV1Style(Event):
        __avro_name__: ClassVar[str] = "shop.orders.OrderCreated"
        order_id: str
        customer_id: str
        items: tuple[shop.LineItem, ...]
        total_cents: int
        currency: str
        created_at: int

    check_event_class(CreatedV1Style, registry)  # coupon_code has a default


def test_check_rejects_wrong_types(registry: LocalSchemaRegistry) -> None:
    """A field whose type cannot hold the Avro type is reported, nested ones too."""

    @dataclass(frozen=True, kw_only=True)
    class Reserved(Event):
        __avro_name__: ClassVar[str] = "shop.inventory.InventoryReserved"
        order_id: bytes
        reservation_id: str
        items: tuple[BadLine, ...]

    with pytest.raises(SchemaError) as caught:
        check_event_class(Reserved, registry)
    assert "field `order_id`: bytes cannot hold Avro string" in str(caught.value)
    assert "field `sku`: int cannot hold Avro string" in str(caught.value)


def test_check_requires_optional_for_nullable(registry: LocalSchemaRegistry) -> None:
    """A nullable schema field must be declared `X | None`."""

    @dataclass(frozen=True, kw_only=True)
    class Created(Event):
        __avro_name__: ClassVar[str] = "shop.orders.OrderCreated"
        order_id: str
        customer_id: str
        items: tuple[shop.LineItem, ...]
        total_cents: int
        currency: str
        created_at: int
        coupon_code: str = ""

    with pytest.raises(SchemaError, match=re.escape("declare `X | None`")):
        check_event_class(Created, registry)


def test_check_unknown_schema(registry: LocalSchemaRegistry) -> None:
    """A class naming no known schema fails."""

    @dataclass(frozen=True)
    class Nope(Event):
        __avro_name__: ClassVar[str] = "t.Nope"

    with pytest.raises(SchemaError, match=re.escape("no schema named `t.Nope`")):
        check_event_class(Nope, registry)


def test_enum_class_missing_a_symbol(registry: LocalSchemaRegistry) -> None:
    """An enum class lacking one of the schema's symbols is reported."""

    @dataclass(frozen=True, kw_only=True)
    class Sent(Event):
        __avro_name__: ClassVar[str] = "shop.notifications.NotificationSent"
        order_id: str
        channel: EmailOnly
        kind: str

    with pytest.raises(SchemaError, match="lacks symbols"):
        check_event_class(Sent, registry)


def test_to_avro_rejects_non_dataclasses() -> None:
    """to_avro needs a dataclass."""

    class Plain(Event):
        __avro_name__: ClassVar[str] = "t.Plain"

    with pytest.raises(TypeError, match="not a dataclass"):
        to_avro(Plain())
