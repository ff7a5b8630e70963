"""Tests of Avro schema resolution rules and the schema-evolution gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from click.testing import CliRunner

from choreo.avro import (
    CompatibilityMode,
    LocalSchemaRegistry,
    check_pair,
    check_registry,
    check_versions,
    is_compatible,
    load_directory,
)
from choreo.cli.schemas_cmd import schemas

REPO = Path(__file__).resolve().parent.parent
INCOMPATIBLE = REPO / "tests" / "fixtures" / "schemas_incompatible"


def enum(symbols: list[str], name: str = "E", **extra: Any) -> dict[str, Any]:
    """Return an enum schema."""
    return {"type": "enum", "name": name, "symbols": symbols, **extra}


def rec(fields: list[dict[str, Any]], name: str = "R", **extra: Any) -> dict[str, Any]:
    """Return a record schema in namespace ``t``."""
    return {"type": "record", "name": name, "namespace": "t", "fields": fields, **extra}


def wrap(schema: Any) -> dict[str, Any]:
    """Return ``schema`` itself when it is a top-level record, else a record with field f."""
    if isinstance(schema, dict) and schema.get("type") == "record" and schema.get("namespace"):
        return schema
    return rec([{"name": "f", "type": schema}])


INNER = rec([{"name": "x", "type": "int"}], "Inner")

# (label, writer, reader, compatible) -- the avro package must agree with choreo on each
CORPUS: list[tuple[str, Any, Any, bool]] = [
    ("int→int", "int", "int", True),
    ("int→long", "int", "long", True),
    ("int→float", "int", "float", True),
    ("int→double", "int", "double", True),
    ("long→int", "long", "int", False),
    ("long→float", "long", "float", True),
    ("float→double", "float", "double", True),
    ("double→float", "double", "float", False),
    ("string→bytes", "string", "bytes", True),
    ("bytes→string", "bytes", "string", True),
    ("string→int", "string", "int", False),
    ("boolean→int", "boolean", "int", False),
    ("null→opt", "null", ["null", "string"], True),
    ("string→opt", "string", ["null", "string"], True),
    ("opt→string", ["null", "string"], "string", False),
    ("union grows", ["null", "string"], ["null", "string", "long"], True),
    ("union shrinks", ["null", "string", "long"], ["null", "string"], False),
    ("union promotes", ["int", "string"], ["long", "bytes"], True),
    ("array promotes", {"type": "array", "items": "int"}, {"type": "array", "items": "long"}, True),
    ("array narrows", {"type": "array", "items": "long"}, {"type": "array", "items": "int"}, False),
    ("map promotes", {"type": "map", "values": "string"}, {"type": "map", "values": "bytes"}, True),
    ("map→array", {"type": "map", "values": "int"}, {"type": "array", "items": "int"}, False),
    ("enum grows", enum(["A", "B"]), enum(["A", "B", "C"]), True),
    ("enum shrinks", enum(["A", "B", "C"]), enum(["A", "B"]), False),
    ("enum shrinks with default", enum(["A", "B", "C"]), enum(["A", "B"], default="A"), True),
    (
        "fixed same",
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "fixed", "name": "F", "size": 4},
        True,
    ),
    (
        "fixed resized",
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "fixed", "name": "F", "size": 8},
        False,
    ),
    ("enum renamed", enum(["A"]), enum(["A"], name="E2"), False),
    (
        "field added with default",
        rec([{"name": "a", "type": "int"}]),
        rec([{"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}]),
        True,
    ),
    (
        "field added without default",
        rec([{"name": "a", "type": "int"}]),
        rec([{"name": "a", "type": "int"}, {"name": "b", "type": "string"}]),
        False,
    ),
    (
        "field removed",
        rec([{"name": "a", "type": "int"}, {"name": "b", "type": "string"}]),
        rec([{"name": "a", "type": "int"}]),
        True,
    ),
    (
        "field renamed with alias",
        rec([{"name": "old", "type": "int"}]),
        rec([{"name": "new", "type": "int", "aliases": ["old"]}]),
        True,
    ),
    (
        "field renamed without alias",
        rec([{"name": "old", "type": "int"}]),
        rec([{"name": "new", "type": "int"}]),
        False,
    ),
    ("nested record renamed", INNER, rec([{"name": "x", "type": "int"}], "Other"), False),
    (
        "nested record renamed with alias",
        INNER,
        rec([{"name": "x", "type": "int"}], "Other", aliases=["t.Inner"]),
        True,
    ),
    (
        "array of records promotes",
        {"type": "array", "items": INNER},
        {"type": "array", "items": rec([{"name": "x", "type": "long"}], "Inner")},
        True,
    ),
    (
        "map of optionals promotes",
        {"type": "map", "values": ["null", "int"]},
        {"type": "map", "values": ["null", "long"]},
        True,
    ),
    ("union into double", ["int", "string"], "double", False),
    ("int into optional string", "int", ["null", "string"], False),
    ("long into optional double", "long", ["null", "double"], True),
    ("fixed→bytes", {"type": "fixed", "name": "F", "size": 4}, "bytes", False),
    ("enum→string", enum(["A"]), "string", False),
    (
        "nested enum default",
        rec([{"name": "a", "type": enum(["A", "B"])}]),
        rec([{"name": "a", "type": enum(["A"], default="A")}]),
        True,
    ),
]


def norm(schema: Any) -> dict[str, Any]:
    """Return the normalized, self-contained form choreo checks (via a registry)."""
    return LocalSchemaRegistry().register(wrap(schema)).schema


def oracle(writer: Any, reader: Any) -> bool:
    """Return the avro package's verdict: can ``reader`` read ``writer`` data?"""
    w = avro.schema.parse(json.dumps(wrap(writer)))
    r = avro.schema.parse(json.dumps(wrap(reader)))
    result = ReaderWriterCompatibilityChecker().get_compatibility(r, w)
    return result.compatibility is SchemaCompatibilityType.compatible


def test_corpus_is_large_enough() -> None:
    """The oracle corpus has at least 30 pairs with both outcomes represented."""
    assert len(CORPUS) >= 30
    assert {c[3] for c in CORPUS} == {True, False}


@pytest.mark.parametrize(
    ("label", "writer", "reader", "expected"), CORPUS, ids=[c[0] for c in CORPUS]
)
def test_agrees_with_avro_compatibility_oracle(
    label: str, writer: Any, reader: Any, expected: bool
) -> None:
    """choreo's resolution rules and avro.compatibility agree on every corpus pair."""
    ours = is_compatible(norm(reader), norm(writer))
    assert ours == oracle(writer, reader), label
    assert ours is expected, label


def test_incompatibility_names_path_and_types() -> None:
    """A nested type change reports the field path and both types."""
    writer = rec([{"name": "items", "type": {"type": "array", "items": INNER}}])
    reader = rec(
        [
            {
                "name": "items",
                "type": {"type": "array", "items": rec([{"name": "x", "type": "string"}], "Inner")},
            }
        ]
    )
    (problem,) = check_pair(norm(reader), norm(writer))
    assert (problem.kind, problem.path, problem.writer, problem.reader) == (
        "type",
        "items[].x",
        "int",
        "string",
    )


def version_registry(*versions: dict[str, Any]) -> LocalSchemaRegistry:
    """Return a registry holding the given versions (v1, v2, ...) of one record."""
    registry = LocalSchemaRegistry()
    for number, schema in enumerate(versions, start=1):
        registry.register(schema, version=number)
    return registry


V1 = rec([{"name": "order_id", "type": "string"}, {"name": "total_cents", "type": "long"}])
V2 = rec([*V1["fields"], {"name": "coupon", "type": ["null", "string"], "default": None}])
V3 = rec(
    [
        {"name": "order_id", "type": "string"},
        {"name": "total_cents", "type": "string"},
        {"name": "coupon", "type": ["null", "string"], "default": None},
    ]
)


def messages(registry: LocalSchemaRegistry, mode: str) -> list[str]:
    """Return the gate's messages for t.R under ``mode``."""
    return [f.message for f in check_versions(registry.versions("t.R"), mode)]


def test_backward_transitive_compares_with_every_earlier_version() -> None:
    """BACKWARD_TRANSITIVE reports v3 against both v1 and v2 with the precise message."""
    registry = version_registry(V1, V2, V3)
    assert messages(registry, "BACKWARD_TRANSITIVE") == [
        "t.R v3 → v1: field `total_cents` changed long → string",
        "t.R v3 → v2: field `total_cents` changed long → string",
    ]
    assert messages(registry, "BACKWARD") == [
        "t.R v3 → v2: field `total_cents` changed long → string"
    ]


def test_added_field_without_default_breaks_backward_not_forward() -> None:
    """A new required field breaks BACKWARD (old data lacks it) but not FORWARD."""
    registry = version_registry(V1, rec([*V1["fields"], {"name": "currency", "type": "string"}]))
    assert messages(registry, "BACKWARD") == [
        "t.R v2 → v1: field `currency` was added without a default"
    ]
    assert messages(registry, "FORWARD") == []


def test_removed_field_without_default_breaks_forward_not_backward() -> None:
    """Removing a field the old version requires breaks FORWARD only."""
    registry = version_registry(V2, V1)
    assert messages(registry, "BACKWARD") == []
    registry = version_registry(V1, rec([{"name": "order_id", "type": "string"}]))
    assert messages(registry, "FORWARD") == [
        "t.R v2 → v1: field `total_cents` was removed but has no default in the old version "
        "(old readers of new data)"
    ]
    assert len(messages(registry, "FULL")) == 1


def test_enum_and_union_messages() -> None:
    """Enum symbol loss and union branch loss are phrased as changes from old to new."""
    registry = version_registry(
        rec([{"name": "s", "type": enum(["A", "B"])}, {"name": "u", "type": ["null", "long"]}]),
        rec([{"name": "s", "type": enum(["A"])}, {"name": "u", "type": ["null", "string"]}]),
    )
    assert messages(registry, "BACKWARD") == [
        "t.R v2 → v1: field `s`: enum lost symbols {B} and has no default",
        "t.R v2 → v1: field `u`: union no longer accepts long",
    ]


def test_mode_none_and_single_versions_pass() -> None:
    """NONE checks nothing; a single version has nothing to break."""
    assert messages(version_registry(V1, V3), "NONE") == []
    assert messages(version_registry(V1), "FULL_TRANSITIVE") == []
    assert CompatibilityMode("FULL_TRANSITIVE").transitive
    assert CompatibilityMode.FULL.backward and CompatibilityMode.FULL.forward


def test_repo_schemas_pass_the_gate() -> None:
    """Every schema in schemas/ passes BACKWARD_TRANSITIVE and FULL_TRANSITIVE."""
    registry = load_directory(REPO / "schemas")
    for mode in ("BACKWARD_TRANSITIVE", "FULL_TRANSITIVE"):
        assert all(not f for f in check_registry(registry, mode).values()), mode


def test_cli_check_passes_on_repo() -> None:
    """`choreo schemas check schemas/` exits 0 and lists the schemas in a table."""
    result = CliRunner().invoke(schemas, ["check", str(REPO / "schemas")])
    assert result.exit_code == 0, result.output
    assert "shop.orders.OrderCreated" in result.output and "compatible" in result.output


def test_cli_check_fails_on_incompatible_fixture() -> None:
    """On the incompatible fixture the gate exits 1 with the precise message."""
    result = CliRunner().invoke(schemas, ["check", str(INCOMPATIBLE)])
    assert result.exit_code == 1
    assert "shop.orders.OrderCreated v3 → v1: field `total_cents` changed long → string" in (
        result.output
    )
    assert "shop.payments.PaymentCharged v2 → v1: field `currency` was added without a default" in (
        result.output
    )


def test_cli_check_mode_option() -> None:
    """--mode FORWARD accepts the added required field but still rejects the type change."""
    result = CliRunner().invoke(schemas, ["check", str(INCOMPATIBLE), "--mode", "forward"])
    assert result.exit_code == 1
    assert "PaymentCharged v2 → v1" not in result.output
    assert "field `total_cents` changed long → string (old readers of new data)" in result.output
