"""Tests of the single-object codec: framing, round trips, resolution and encode errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from choreo.avro import LocalSchemaRegistry, load_directory
from choreo.avro.codec import SINGLE_OBJECT_MARKER, Codec, SingleObjectCodec
from choreo.avro.jsonform import strip_logical_types
from choreo.errors import DecodeError, EncodeError, UnknownEventError

REPO = Path(__file__).resolve().parent.parent
ORDER = "shop.orders.OrderCreated"


def order(**overrides: Any) -> dict[str, Any]:
    """Return a typical OrderCreated v2 datum with three line items."""
    datum: dict[str, Any] = {
        "order_id": "ord-0001",
        "customer_id": "cust-42",
        "items": [
            {"sku": f"SKU-{i}", "quantity": i + 1, "unit_price_cents": 1999 * (i + 1)}
            for i in range(3)
        ],
        "total_cents": 11994,
        "currency": "EUR",
        "created_at": 1_700_000_000_000,
        "coupon_code": None,
    }
    datum.update(overrides)
    return datum


@pytest.fixture(scope="module")
def registry() -> LocalSchemaRegistry:
    """The example domain's schemas."""
    return load_directory(REPO / "schemas")


@pytest.fixture
def codec(registry: LocalSchemaRegistry) -> SingleObjectCodec:
    """A single-object codec over the example domain."""
    return SingleObjectCodec(registry)


def fastavro_body(
    registry: LocalSchemaRegistry, name: str, datum: Any, version: int | None = None
) -> bytes:
    """Return fastavro's schemaless encoding of ``datum`` (the oracle)."""
    schema = parse_schema(strip_logical_types(registry.get(name, version).schema))
    out = io.BytesIO()
    schemaless_writer(out, schema, datum)
    return out.getvalue()


def test_codec_satisfies_protocol(codec: SingleObjectCodec) -> None:
    """SingleObjectCodec is a Codec."""
    assert isinstance(codec, Codec)


def test_framing_is_marker_fingerprint_body(
    codec: SingleObjectCodec, registry: LocalSchemaRegistry
) -> None:
    """Bytes are C3 01, the writer's 8-byte little-endian fingerprint, then fastavro's body."""
    data = codec.encode(ORDER, order())
    latest = registry.get(ORDER)
    assert data[:2] == SINGLE_OBJECT_MARKER == b"\xc3\x01"
    assert data[2:10] == latest.fingerprint.to_bytes(8, "little")
    assert data[10:] == fastavro_body(registry, ORDER, order())


def test_round_trip_and_fastavro_reads_the_body(
    codec: SingleObjectCodec, registry: LocalSchemaRegistry
) -> None:
    """decode(encode(x)) == x, and fastavro reads the body back to x too."""
    datum = order(coupon_code="WELCOME")
    data = codec.encode(ORDER, datum)
    assert codec.decode(data, ORDER) == datum
    schema = parse_schema(strip_logical_types(registry.get(ORDER).schema))
    assert schemaless_reader(io.BytesIO(data[10:]), schema, None) == datum


def test_v1_events_decode_with_a_v2_reader(codec: SingleObjectCodec) -> None:
    """A v1 event read as the latest version gets the new field's default."""
    v1 = order()
    del v1["coupon_code"]
    data = codec.encode(ORDER, v1, version=1)
    assert codec.writer_schema(data).version == 1
    assert codec.decode(data, ORDER) == {**v1, "coupon_code": None}
    assert codec.decode_any(data) == (ORDER, v1)


def test_v2_events_decode_with_a_v1_reader(registry: LocalSchemaRegistry) -> None:
    """A reader on v1 reads v2 events (dropping the new field) once it knows v2's fingerprint.

    Without v2 in its registry the fingerprint is unknown: deploy schemas before writers.
    """
    data = SingleObjectCodec(registry).encode(ORDER, order(coupon_code="X"))
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        SingleObjectCodec(LocalSchemaRegistry([registry.get(ORDER, 1)])).decode(data, ORDER)
    expected = order()
    del expected["coupon_code"]
    assert SingleObjectCodec(_LatestIsV1(registry)).decode(data, ORDER) == expected


class _LatestIsV1(LocalSchemaRegistry):
    """A registry knowing every version whose latest (reader) version is v1."""

    def __init__(self, inner: LocalSchemaRegistry) -> None:
        super().__init__(iter(inner))

    def get(self, full_name: str, version: int | None = None) -> Any:
        """Return v1 as the latest version."""
        return super().get(full_name, 1 if version is None else version)


def test_decode_any_and_writer_name(codec: SingleObjectCodec) -> None:
    """decode_any returns the writer's full name with the datum as written."""
    data = codec.encode("shop.orders.OrderFailed", {"order_id": "o", "reason": "r"})
    assert codec.writer_name(data) == "shop.orders.OrderFailed"
    assert codec.decode_any(data) == ("shop.orders.OrderFailed", {"order_id": "o", "reason": "r"})


def test_reader_of_another_type_is_a_decode_error(codec: SingleObjectCodec) -> None:
    """Reading an OrderFailed as OrderCompleted fails with both names in the message."""
    data = codec.encode("shop.orders.OrderFailed", {"order_id": "o", "reason": "r"})
    with pytest.raises(DecodeError, match=r"OrderFailed v1 cannot be read as .*OrderCompleted"):
        codec.decode(data, "shop.orders.OrderCompleted")


def test_unknown_names_raise_unknown_event(codec: SingleObjectCodec) -> None:
    """An unknown schema name on encode or as reader raises UnknownEventError."""
    with pytest.raises(UnknownEventError):
        codec.encode("shop.orders.Nope", {})
    data = codec.encode("shop.orders.OrderCompleted", {"order_id": "o"})
    with pytest.raises(UnknownEventError):
        codec.decode(data, "shop.orders.Nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"total_cents": "12"}, r"total_cents: expected long, got str"),
        (
            {"items": [{"sku": "a", "quantity": 2**31, "unit_price_cents": 1}]},
            r"items\[0\]\.quantity: 2147483648 is out of int range",
        ),
        (
            {"items": [{"sku": "a", "unit_price_cents": 1}]},
            r"items\[0\]\.quantity: missing required field",
        ),
        ({"items": "abc"}, r"items: expected array"),
        ({"coupon_code": 5}, r"coupon_code: 5 matches no branch"),
        ({"currency": "\ud800"}, r"currency: string is not encodable as UTF-8"),
    ],
)
def test_encode_errors_name_the_field(
    codec: SingleObjectCodec, change: dict[str, Any], message: str
) -> None:
    """A datum that does not fit raises EncodeError naming the offending field."""
    with pytest.raises(EncodeError, match=message):
        codec.encode(ORDER, order(**change))


def test_encode_size_cap(registry: LocalSchemaRegistry) -> None:
    """An encoding larger than max_size is refused on encode."""
    small = SingleObjectCodec(registry, max_size=64)
    with pytest.raises(EncodeError, match="exceeds the limit of 64"):
        small.encode(ORDER, order())


def test_missing_optional_field_uses_its_default(codec: SingleObjectCodec) -> None:
    """A datum lacking a field that has a default is written with the default."""
    datum = order()
    del datum["coupon_code"]
    assert codec.decode(codec.encode(ORDER, datum), ORDER)["coupon_code"] is None


def test_decode_accepts_bytearray_and_memoryview(codec: SingleObjectCodec) -> None:
    """bytearray and memoryview inputs decode like bytes."""
    data = codec.encode(ORDER, order())
    assert codec.decode(bytearray(data), ORDER) == codec.decode(memoryview(data), ORDER) == order()


def test_decode_error_keeps_raw(codec: SingleObjectCodec) -> None:
    """DecodeError.raw holds the offending bytes."""
    bad = codec.encode(ORDER, order())[:-3]
    with pytest.raises(DecodeError) as caught:
        codec.decode(bad, ORDER)
    assert caught.value.raw == bad


def test_resolution_promotes_renames_and_fills_defaults() -> None:
    """Promotions, aliases, defaults, skipped fields and enum defaults resolve as in Avro."""
    registry = LocalSchemaRegistry()
    registry.register(
        {
            "type": "record",
            "name": "R",
            "namespace": "t",
            "fields": [
                {"name": "n", "type": "int"},
                {"name": "old", "type": "string"},
                {"name": "gone", "type": {"type": "array", "items": "string"}},
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
                {"name": "u", "type": ["null", "int"]},
                {"name": "s", "type": "string"},
            ],
        },
        version=1,
    )
    registry.register(
        {
            "type": "record",
            "name": "R",
            "namespace": "t",
            "fields": [
                {"name": "n", "type": "double"},
                {"name": "renamed", "type": "string", "aliases": ["old"]},
                {
                    "name": "e",
                    "type": {
                        "type": "enum",
                        "name": "E",
                        "symbols": ["A", "B", "X"],
                        "default": "X",
                    },
                },
                {"name": "u", "type": ["null", "long", "string"]},
                {"name": "s", "type": "bytes"},
                {"name": "extra", "type": {"type": "map", "values": "int"}, "default": {"a": 1}},
            ],
        },
        version=2,
    )
    codec = SingleObjectCodec(registry)
    data = codec.encode(
        "t.R", {"n": 3, "old": "o", "gone": ["x", "y"], "e": "C", "u": 7, "s": "é"}, version=1
    )
    first = codec.decode(data, "t.R")
    assert first == {
        "n": 3.0,
        "renamed": "o",
        "e": "X",
        "u": 7,
        "s": "é".encode(),
        "extra": {"a": 1},
    }
    assert isinstance(first["n"], float)
    second = codec.decode(data, "t.R")
    second["extra"]["b"] = 2
    assert codec.decode(data, "t.R")["extra"] == {"a": 1}  # defaults are copied per decode


def test_resolution_matches_fastavro(registry: LocalSchemaRegistry) -> None:
    """v1 → v2 resolution gives what fastavro's reader gives for the same pair."""
    v1, v2 = (parse_schema(strip_logical_types(v.schema)) for v in registry.versions(ORDER))
    datum = order()
    del datum["coupon_code"]
    codec = SingleObjectCodec(registry)
    data = codec.encode(ORDER, datum, version=1)
    assert codec.decode(data, ORDER) == schemaless_reader(io.BytesIO(data[10:]), v1, v2)
