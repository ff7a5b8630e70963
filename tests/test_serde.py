"""Tests of EventSerde: typed events to bytes and back through a codec."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from choreo.avro import LocalSchemaRegistry, load_directory
from choreo.avro.codec import SingleObjectCodec
from choreo.avro.confluent import ConfluentCodec
from choreo.avro.serde import EventSerde
from choreo.errors import DecodeError, SchemaError, UnknownEventError
from choreo.model.events import Event, SagaTimedOut
from services import events as shop

REPO = Path(__file__).resolve().parent.parent
ALL = [
    c
    for c in vars(shop).values()
    if isinstance(c, type) and issubclass(c, Event) and c is not Event
]


def order(**overrides: Any) -> shop.OrderCreated:
    """Return a typical OrderCreated event."""
    fields: dict[str, Any] = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "total_cents": 600,
        "currency": "EUR",
        "created_at": 1_700_000_000_000,
        "items": tuple(
            shop.LineItem(sku=f"s{i}", quantity=i + 1, unit_price_cents=100) for i in range(3)
        ),
    }
    fields.update(overrides)
    return shop.OrderCreated(**fields)


@pytest.fixture(scope="module")
def registry() -> LocalSchemaRegistry:
    """The example domain's schemas."""
    return load_directory(REPO / "schemas")


@pytest.fixture(params=["single-object", "confluent"])
def serde(request: pytest.FixtureRequest, registry: LocalSchemaRegistry) -> EventSerde:
    """An EventSerde over each codec, knowing every generated class and SagaTimedOut."""
    if request.param == "single-object":
        codec: Any = SingleObjectCodec(registry)
    else:
        client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        codec = ConfluentCodec(client, registry)
    return EventSerde(codec, [*ALL, SagaTimedOut])


def test_round_trip_every_shop_event(serde: EventSerde) -> None:
    """Each kind of event decodes back equal to what was encoded."""
    events: list[Event] = [
        order(coupon_code="C"),
        shop.InventoryReserved(order_id="o", reservation_id="r", items=[]),
        shop.PaymentCharged(order_id="o", payment_id="p", amount_cents=5),
        shop.NotificationSent(order_id="o", channel=shop.Channel.SMS, kind="order_completed"),
        SagaTimedOut(saga="s", correlation_id="c", step="a.b", deadline_ms=1, detected_at=2),
    ]
    for event in events:
        data = serde.encode(event)
        decoded = serde.decode(type(event).__avro_name__, data)
        assert type(decoded) is type(event)
        assert decoded == event or (
            isinstance(event, shop.InventoryReserved) and decoded.items == ()  # type: ignore[attr-defined]
        )


def test_decoded_values_are_typed(serde: EventSerde) -> None:
    """Nested records become dataclasses, arrays tuples and enums enum members."""
    decoded = serde.decode("shop.orders.OrderCreated", serde.encode(order()))
    assert isinstance(decoded, shop.OrderCreated)
    assert isinstance(decoded.items, tuple) and isinstance(decoded.items[0], shop.LineItem)
    sent = serde.decode(
        "shop.notifications.NotificationSent",
        serde.encode(shop.NotificationSent(order_id="o", channel=shop.Channel.PUSH, kind="k")),
    )
    assert sent.channel is shop.Channel.PUSH  # type: ignore[attr-defined]


def test_decode_dict_needs_no_classes(serde: EventSerde) -> None:
    """decode_dict returns the writer's full name and a plain dict."""
    name, datum = serde.decode_dict(serde.encode(order()))
    assert name == "shop.orders.OrderCreated"
    assert datum["items"][0] == {"sku": "s0", "quantity": 1, "unit_price_cents": 100}


def test_unknown_event_type(serde: EventSerde) -> None:
    """Decoding an event type with no registered class raises UnknownEventError."""
    with pytest.raises(UnknownEventError, match=r"shop\.orders\.Nope"):
        serde.decode("shop.orders.Nope", serde.encode(order()))
    with pytest.raises(UnknownEventError):
        serde.event_class("shop.orders.Nope")


def test_event_class_and_known_types(serde: EventSerde) -> None:
    """event_class maps a type to its class; known_types lists every registered type."""
    assert serde.event_class("shop.orders.OrderCreated") is shop.OrderCreated
    assert "choreo.SagaTimedOut" in serde.known_types
    assert len(serde.known_types) == len(ALL) + 1


def test_bad_bytes_raise_decode_error(serde: EventSerde) -> None:
    """Corrupt bytes raise DecodeError keeping the raw bytes."""
    data = serde.encode(order())[:-1]
    with pytest.raises(DecodeError) as caught:
        serde.decode("shop.orders.OrderCreated", data)
    assert caught.value.raw == data


def test_mismatched_header_type_is_a_decode_error(serde: EventSerde) -> None:
    """Bytes of one type decoded as another raise DecodeError."""
    data = serde.encode(shop.OrderFailed(order_id="o", reason="r"))
    with pytest.raises(DecodeError):
        serde.decode("shop.orders.OrderCompleted", data)


def test_v1_bytes_decode_into_the_v2_class(registry: LocalSchemaRegistry) -> None:
    """An event written with v1 decodes into today's class with the new field defaulted."""
    codec = SingleObjectCodec(registry)
    serde = EventSerde(codec, ALL)
    datum = {
        "order_id": "o",
        "customer_id": "c",
        "items": [],
        "total_cents": 0,
        "currency": "EUR",
        "created_at": 1,
    }
    decoded = serde.decode(
        "shop.orders.OrderCreated", codec.encode("shop.orders.OrderCreated", datum, version=1)
    )
    assert decoded == shop.OrderCreated(**{**datum, "items": ()})  # type: ignore[arg-type]
    assert decoded.coupon_code is None  # type: ignore[attr-defined]


@dataclass(frozen=True)
class WrongCompleted(Event):
    """OrderCompleted with an extra field its schema lacks."""

    __avro_name__: ClassVar[str] = "shop.orders.OrderCompleted"
    order_id: str
    extra: int


def test_mismatched_class_fails_at_construction(registry: LocalSchemaRegistry) -> None:
    """A class that disagrees with its schema is rejected when the serde is built."""
    with pytest.raises(SchemaError, match="extra"):
        EventSerde(SingleObjectCodec(registry), [WrongCompleted])


def test_two_classes_for_one_type_are_rejected(registry: LocalSchemaRegistry) -> None:
    """Registering two classes for one event type is an error."""

    @dataclass(frozen=True)
    class Completed(Event):
        __avro_name__: ClassVar[str] = "shop.orders.OrderCompleted"
        order_id: str

    with pytest.raises(SchemaError, match="two classes"):
        EventSerde(SingleObjectCodec(registry), [shop.OrderCompleted, Completed])


def test_encode_registers_unknown_classes_after_checking(registry: LocalSchemaRegistry) -> None:
    """encode accepts a class the serde was not built with, checking it first."""
    serde = EventSerde(SingleObjectCodec(registry), [])
    data = serde.encode(shop.OrderCompleted(order_id="o"))
    assert serde.decode("shop.orders.OrderCompleted", data) == shop.OrderCompleted(order_id="o")
    with pytest.raises(SchemaError):
        serde.encode(WrongCompleted(order_id="o", extra=1))


def test_public_api_is_pinned() -> None:
    """The names the runtime, tracker and services import stay exported."""
    import choreo.avro
    import choreo.avro.classes
    import choreo.avro.codec
    import choreo.avro.confluent
    import choreo.avro.serde
    import choreo.model.events

    assert choreo.avro.serde.__all__ == ["EventSerde"]
    assert sorted(choreo.avro.codec.__all__) == [
        "Codec",
        "DEFAULT_MAX_SIZE",
        "RecordBuilders",
        "SINGLE_OBJECT_MARKER",
        "SingleObjectCodec",
    ]
    assert sorted(choreo.avro.confluent.__all__) == ["ConfluentCodec", "record_name_strategy"]
    assert {
        "Event",
        "SagaTimedOut",
        "event_type_of",
        "from_avro",
        "to_avro",
    } <= set(choreo.model.events.__all__)
    assert sorted(choreo.avro.classes.__all__) == ["check_event_class", "record_builders"]
    assert {
        "LocalSchemaRegistry",
        "SchemaRegistry",
        "SchemaVersion",
        "load_directory",
        "check_registry",
        "CompatibilityMode",
    } <= set(choreo.avro.__all__)
