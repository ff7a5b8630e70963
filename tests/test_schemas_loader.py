"""Tests of loading .avsc directories into a registry of fingerprinted schema versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from choreo.avro import (
    BUILTIN_DIR,
    LocalSchemaRegistry,
    SchemaRegistry,
    load_directory,
)
from choreo.avro.jsonform import strip_logical_types
from choreo.errors import SchemaError, UnknownEventError

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"

SHOP_EVENTS = [
    "shop.orders.OrderCreated",
    "shop.orders.OrderCompleted",
    "shop.orders.OrderFailed",
    "shop.inventory.InventoryReserved",
    "shop.inventory.InventoryReservationFailed",
    "shop.inventory.InventoryReleased",
    "shop.payments.PaymentCharged",
    "shop.payments.PaymentDeclined",
    "shop.payments.PaymentRefunded",
    "shop.shipping.ShipmentCreated",
    "shop.shipping.ShipmentDispatched",
    "shop.shipping.ShipmentDispatchFailed",
    "shop.shipping.ShipmentCancelled",
    "shop.notifications.NotificationSent",
]


def write(root: Path, relative: str, schema: Any) -> Path:
    """Write ``schema`` as JSON to ``root/relative`` and return the path."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema) if not isinstance(schema, str) else schema)
    return path


def record(name: str, fields: list[dict[str, Any]], namespace: str = "t") -> dict[str, Any]:
    """Return a record schema."""
    return {"type": "record", "name": name, "namespace": namespace, "fields": fields}


@pytest.fixture(scope="module")
def shop() -> LocalSchemaRegistry:
    """The example domain's registry."""
    return load_directory(SCHEMAS)


def test_repo_schemas_load_with_every_event(shop: LocalSchemaRegistry) -> None:
    """Every event of the example domain is loaded, each with an order_id field."""
    for name in SHOP_EVENTS:
        fields = [f["name"] for f in shop.get(name).schema["fields"]]
        assert "order_id" in fields, name
    assert isinstance(shop, SchemaRegistry)


def test_builtin_saga_timed_out_is_always_loaded(tmp_path: Path) -> None:
    """choreo.SagaTimedOut is in every registry, even one loaded from an empty directory."""
    registry = load_directory(tmp_path)
    timed_out = registry.get("choreo.SagaTimedOut")
    assert [f["name"] for f in timed_out.schema["fields"]] == [
        "saga",
        "correlation_id",
        "step",
        "deadline_ms",
        "detected_at",
    ]
    assert Path(timed_out.source).parent == BUILTIN_DIR


def test_versions_are_files_and_latest_is_highest(shop: LocalSchemaRegistry) -> None:
    """OrderCreated has v1 and v2; the latest adds an optional coupon_code with a default."""
    versions = shop.versions("shop.orders.OrderCreated")
    assert [v.version for v in versions] == [1, 2]
    latest = shop.get("shop.orders.OrderCreated")
    assert latest.version == 2 and latest == shop.latest("shop.orders.OrderCreated")
    coupon = latest.schema["fields"][-1]
    assert coupon["name"] == "coupon_code" and coupon["default"] is None
    assert shop.get("shop.orders.OrderCreated", 1).fingerprint != latest.fingerprint


def test_shared_line_item_is_resolved_across_files(shop: LocalSchemaRegistry) -> None:
    """OrderCreated and InventoryReserved embed the LineItem defined in its own file."""
    line_item = shop.get("shop.orders.LineItem").schema
    for name in ("shop.orders.OrderCreated", "shop.inventory.InventoryReserved"):
        items = next(f for f in shop.get(name).schema["fields"] if f["name"] == "items")
        assert items["type"]["items"] == line_item


def test_fingerprint_matches_the_avro_reference_implementation(shop: LocalSchemaRegistry) -> None:
    """The CRC-64-AVRO fingerprint equals the avro package's, for every loaded schema.

    avro-python keeps ``{"type": "long"}`` for logical types in its canonical form, which
    the specification (and Java) write as ``"long"``; compare on logical-free schemas.
    """
    for version in shop:
        plain = json.dumps(strip_logical_types(version.schema))
        reference = avro.schema.parse(plain).fingerprint("CRC-64-AVRO")
        assert version.fingerprint_bytes == reference, version.full_name


def test_fingerprint_is_crc64_avro_of_the_canonical_form(shop: LocalSchemaRegistry) -> None:
    """The fingerprint is the specification's CRC-64-AVRO of the canonical form's bytes."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    for version in shop:
        fp = empty
        for byte in version.canonical_form.encode():
            fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
        assert version.fingerprint == fp, version.full_name


def test_lookup_by_fingerprint_int_or_bytes(shop: LocalSchemaRegistry) -> None:
    """by_fingerprint accepts the integer or its 8 little-endian bytes."""
    v1 = shop.get("shop.orders.OrderCreated", 1)
    assert shop.by_fingerprint(v1.fingerprint) is v1
    assert shop.by_fingerprint(v1.fingerprint_bytes) is v1
    with pytest.raises(UnknownEventError):
        shop.by_fingerprint(b"\x00" * 8)


def test_unknown_names_and_versions_raise(shop: LocalSchemaRegistry) -> None:
    """Unknown names and versions raise UnknownEventError."""
    with pytest.raises(UnknownEventError, match=r"shop\.orders\.Nope"):
        shop.get("shop.orders.Nope")
    with pytest.raises(UnknownEventError, match="v9"):
        shop.get("shop.orders.OrderCreated", 9)
    with pytest.raises(UnknownEventError):
        shop.versions("shop.orders.Nope")


def test_names_are_qualified_and_namespace_keys_dropped(tmp_path: Path) -> None:
    """Nested types inherit the namespace; references by simple name resolve to full names."""
    write(
        tmp_path,
        "a/Outer.v1.avsc",
        record(
            "Outer",
            [
                {"name": "inner", "type": record("Inner", [{"name": "x", "type": "int"}], "other")},
                {"name": "again", "type": "other.Inner"},
                {
                    "name": "status",
                    "type": {"type": "enum", "name": "Status", "symbols": ["A", "B"]},
                },
                {"name": "status2", "type": "Status"},
            ],
        ),
    )
    schema = load_directory(tmp_path).get("t.Outer").schema
    assert "namespace" not in schema
    inner, again, status, status2 = (f["type"] for f in schema["fields"])
    assert inner["name"] == "other.Inner" and again == "other.Inner"
    assert status["name"] == "t.Status" and status2 == "t.Status"


def test_simple_name_does_not_reach_another_namespace(tmp_path: Path) -> None:
    """A simple name resolves in the enclosing namespace only, as the specification says."""
    write(
        tmp_path,
        "a/Outer.v1.avsc",
        record(
            "Outer",
            [
                {"name": "inner", "type": record("Inner", [{"name": "x", "type": "int"}], "other")},
                {"name": "again", "type": "Inner"},
            ],
        ),
    )
    with pytest.raises(SchemaError, match=r"t\.Outer\.again: unknown type `Inner`"):
        load_directory(tmp_path)


def test_broken_json_names_the_file(tmp_path: Path) -> None:
    """A file that is not JSON fails with its path in the message."""
    path = write(tmp_path, "x/Bad.v1.avsc", "{not json")
    with pytest.raises(SchemaError, match=r"Bad\.v1\.avsc"):
        load_directory(tmp_path)
    assert path.exists()


def test_unknown_type_names_file_and_field(tmp_path: Path) -> None:
    """An unknown type reference names the file and the field."""
    write(tmp_path, "x/Order.v1.avsc", record("Order", [{"name": "item", "type": "t.Missing"}]))
    with pytest.raises(SchemaError, match=r"Order\.v1\.avsc: t\.Order\.item: unknown type"):
        load_directory(tmp_path)


def test_bad_default_names_the_field(tmp_path: Path) -> None:
    """A default that does not match its type names the field."""
    write(
        tmp_path,
        "x/Order.v1.avsc",
        record("Order", [{"name": "count", "type": "int", "default": "many"}]),
    )
    with pytest.raises(SchemaError, match=r"t\.Order\.count: default \"many\" does not match"):
        load_directory(tmp_path)


def test_union_default_must_match_first_branch(tmp_path: Path) -> None:
    """A union field's default must match the union's first branch."""
    write(
        tmp_path,
        "x/Order.v1.avsc",
        record("Order", [{"name": "code", "type": ["string", "null"], "default": None}]),
    )
    with pytest.raises(SchemaError, match="code"):
        load_directory(tmp_path)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ([{"name": "a", "type": "int"}, {"name": "a", "type": "int"}], "duplicate field"),
        ([{"name": "a"}], "field without a `type`"),
        ([{"name": "a-b", "type": "int"}], "invalid field name"),
        ([{"name": "u", "type": ["int", "int"]}], "union lists `int` twice"),
        ([{"name": "e", "type": {"type": "enum", "name": "E", "symbols": []}}], "symbols"),
        ([{"name": "f", "type": {"type": "fixed", "name": "F"}}], "size"),
        ([{"name": "a", "type": {"type": "array"}}], "array without `items`"),
    ],
)
def test_structural_errors_name_the_field(
    tmp_path: Path, fields: list[dict[str, Any]], problem: str
) -> None:
    """Structural mistakes raise SchemaError naming the problem."""
    write(tmp_path, "x/Order.v1.avsc", record("Order", fields))
    with pytest.raises(SchemaError, match=problem):
        load_directory(tmp_path)


def test_file_name_must_match_the_type(tmp_path: Path) -> None:
    """A file named for another type than it defines is rejected."""
    write(tmp_path, "x/Other.v1.avsc", record("Order", [{"name": "a", "type": "int"}]))
    with pytest.raises(SchemaError, match="named for `Other`"):
        load_directory(tmp_path)


def test_file_name_needs_a_version_pattern(tmp_path: Path) -> None:
    """Files not named <Name>.v<N>.avsc are rejected; a bare <Name>.avsc is v1."""
    write(tmp_path, "x/Order.avsc", record("Order", [{"name": "a", "type": "int"}]))
    assert load_directory(tmp_path).get("t.Order").version == 1
    write(tmp_path, "x/Order.version2.avsc", record("Order", [{"name": "a", "type": "int"}]))
    with pytest.raises(SchemaError, match="file name must be"):
        load_directory(tmp_path)


def test_same_version_twice_is_rejected(tmp_path: Path) -> None:
    """Two files defining the same name and version fail, naming both."""
    write(tmp_path, "a/Order.v1.avsc", record("Order", [{"name": "a", "type": "int"}]))
    write(tmp_path, "b/Order.v1.avsc", record("Order", [{"name": "a", "type": "long"}]))
    with pytest.raises(SchemaError, match="also defined in"):
        load_directory(tmp_path)


def test_register_resolves_against_loaded_names(shop: LocalSchemaRegistry) -> None:
    """register() adds a schema whose references resolve to already loaded types."""
    registry = load_directory(SCHEMAS)
    version = registry.register(
        record(
            "Basket",
            [{"name": "lines", "type": {"type": "array", "items": "shop.orders.LineItem"}}],
        )
    )
    assert registry.get("t.Basket") is version
    assert version.schema["fields"][0]["type"]["items"]["name"] == "shop.orders.LineItem"
    assert "t.Basket" not in shop


def test_adding_a_different_schema_under_an_existing_version_fails(tmp_path: Path) -> None:
    """Re-adding a name/version with other content raises; the identical one is ignored."""
    registry = load_directory(SCHEMAS)
    before = len(registry)
    registry.load_directory(SCHEMAS)
    assert len(registry) == before
    write(
        tmp_path,
        "OrderFailed.v1.avsc",
        record("OrderFailed", [{"name": "order_id", "type": "string"}], "shop.orders"),
    )
    with pytest.raises(SchemaError, match="defined twice"):
        registry.load_directory(tmp_path)


def test_canonical_form_drops_docs_and_logical_types(shop: LocalSchemaRegistry) -> None:
    """The Parsing Canonical Form keeps names and types only (no doc, no logicalType)."""
    canonical = shop.get("shop.orders.OrderCreated").canonical_form
    assert "doc" not in canonical and "logicalType" not in canonical
    assert canonical.startswith('{"name":"shop.orders.OrderCreated","type":"record"')
