"""Tests of the Confluent wire-format codec, interoperating with confluent-kafka's serdes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from choreo.avro import LocalSchemaRegistry, load_directory
from choreo.avro.codec import Codec
from choreo.avro.confluent import ConfluentCodec
from choreo.errors import DecodeError, UnknownEventError

REPO = Path(__file__).resolve().parent.parent
ORDER = "shop.orders.OrderCreated"
CTX = SerializationContext("orders", MessageField.VALUE)


def order(**overrides: Any) -> dict[str, Any]:
    """Return an OrderCreated v2 datum."""
    datum: dict[str, Any] = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "total_cents": 300,
        "currency": "EUR",
        "created_at": 1_700_000_000_123,
        "coupon_code": "SPRING",
        "items": [{"sku": f"s{i}", "quantity": i + 1, "unit_price_cents": 100} for i in range(3)],
    }
    datum.update(overrides)
    return datum


@pytest.fixture(scope="module")
def registry() -> LocalSchemaRegistry:
    """The example domain's schemas."""
    return load_directory(REPO / "schemas")


@pytest.fixture
def client() -> Any:
    """A fresh mock Schema Registry client."""
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


@pytest.fixture
def codec(client: Any, registry: LocalSchemaRegistry) -> ConfluentCodec:
    """A Confluent codec over the mock registry."""
    return ConfluentCodec(client, registry)


def test_is_a_codec(codec: ConfluentCodec) -> None:
    """ConfluentCodec satisfies the Codec protocol."""
    assert isinstance(codec, Codec)


def test_choreo_encodes_confluent_decodes(codec: ConfluentCodec, client: Any) -> None:
    """confluent-kafka's AvroDeserializer reads what choreo writes."""
    data = codec.encode(ORDER, order())
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == codec.schema_id(ORDER)
    decoded = AvroDeserializer(client)(data, CTX)
    expected = order(created_at=dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC))
    assert decoded == expected


def test_confluent_encodes_choreo_decodes(
    codec: ConfluentCodec, client: Any, registry: LocalSchemaRegistry
) -> None:
    """choreo reads what confluent-kafka's AvroSerializer writes, byte for byte the same."""
    serializer = AvroSerializer(
        client,
        registry.get(ORDER).to_json(),
        conf={"subject.name.strategy": record_subject_name_strategy},
    )
    data = serializer(order(), CTX)
    assert data is not None
    assert codec.decode(data, ORDER) == order()
    assert codec.decode_any(data) == (ORDER, order())
    assert codec.encode(ORDER, order()) == data


def test_v1_written_by_confluent_reads_as_v2(
    codec: ConfluentCodec, client: Any, registry: LocalSchemaRegistry
) -> None:
    """An old producer's v1 record decodes with today's v2 reader schema."""
    v1 = order()
    del v1["coupon_code"]
    serializer = AvroSerializer(
        client,
        registry.get(ORDER, 1).to_json(),
        conf={"subject.name.strategy": lambda ctx, name: "legacy"},
    )
    data = serializer(v1, CTX)
    assert data is not None
    assert codec.decode(data, ORDER) == {**v1, "coupon_code": None}
    assert codec.writer_name(data) == ORDER


def test_writer_schema_with_references_resolves(codec: ConfluentCodec, client: Any) -> None:
    """A writer registered with a Schema Registry reference to LineItem decodes."""
    line_item = json.dumps(
        {
            "type": "record",
            "name": "LineItem",
            "namespace": "shop.orders",
            "fields": [
                {"name": "sku", "type": "string"},
                {"name": "quantity", "type": "int"},
                {"name": "unit_price_cents", "type": "long"},
            ],
        }
    )
    client.register_schema("line-item", Schema(line_item, "AVRO"))
    basket = json.dumps(
        {
            "type": "record",
            "name": "Basket",
            "namespace": "shop.orders",
            "fields": [
                {"name": "items", "type": {"type": "array", "items": "shop.orders.LineItem"}}
            ],
        }
    )
    schema_id = client.register_schema(
        "basket", Schema(basket, "AVRO", [SchemaReference("shop.orders.LineItem", "line-item", 1)])
    )
    data = bytes([0]) + schema_id.to_bytes(4, "big") + b"\x02\x02a\x02\x04\x00"
    assert codec.decode_any(data) == (
        "shop.orders.Basket",
        {"items": [{"sku": "a", "quantity": 1, "unit_price_cents": 2}]},
    )


def test_unknown_id_and_bad_magic(codec: ConfluentCodec) -> None:
    """An unknown schema id or a wrong magic byte raise DecodeError."""
    with pytest.raises(DecodeError, match="unknown schema id 4242"):
        codec.decode(b"\x00" + (4242).to_bytes(4, "big") + b"\x00", ORDER)
    with pytest.raises(DecodeError, match="magic byte"):
        codec.decode(b"\x01\x00\x00\x00\x01\x00", ORDER)
    with pytest.raises(DecodeError, match="shorter than the header"):
        codec.decode(b"\x00\x00", ORDER)


def test_recursive_remote_writer_is_rejected(codec: ConfluentCodec, client: Any) -> None:
    """A recursive writer schema from the registry is refused (unbounded depth)."""
    node = json.dumps(
        {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}
    )
    schema_id = client.register_schema("node", Schema(node, "AVRO"))
    with pytest.raises(DecodeError, match="recursive"):
        codec.decode_any(b"\x00" + schema_id.to_bytes(4, "big") + b"\x00")


def test_hardening_applies_to_the_body(codec: ConfluentCodec) -> None:
    """Bodies are validated as strictly as single-object ones (trailing bytes, truncation)."""
    data = codec.encode(ORDER, order())
    for bad in (data + b"\x00", data[:-2]):
        with pytest.raises(DecodeError):
            codec.decode(bad, ORDER)


def test_lookup_without_auto_register(client: Any, registry: LocalSchemaRegistry) -> None:
    """With auto_register off an unregistered schema is an UnknownEventError."""
    strict = ConfluentCodec(client, registry, auto_register=False)
    with pytest.raises(UnknownEventError):
        strict.encode(ORDER, order())
    ConfluentCodec(client, registry).encode(ORDER, order())
    assert strict.decode(strict.encode(ORDER, order()), ORDER) == order()
