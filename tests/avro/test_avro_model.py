"""The schema model: parsed once, immutable, walked by visitors; JSON and canonical forms."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastavro.schema import to_parsing_canonical_form

from choreo.avro import load_directory
from choreo.avro.jsonform import canonical_form, to_json
from choreo.avro.model import (
    Array,
    Enum,
    Fixed,
    Map,
    Primitive,
    Record,
    Ref,
    Schema,
    Union,
    Visitor,
    type_label,
)
from choreo.avro.parse import parse_fragment, parse_schema
from choreo.errors import SchemaError

REPO = Path(__file__).resolve().parents[2]

SAMPLE = {
    "type": "record",
    "name": "Order",
    "namespace": "t",
    "doc": "An order.",
    "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 4}},
                    ],
                },
            },
        },
        {"name": "first", "type": ["null", "Line"], "default": None},
        {"name": "by_sku", "type": {"type": "map", "values": "t.Line"}, "default": {}},
        {
            "name": "state",
            "type": {"type": "enum", "name": "State", "symbols": ["NEW", "DONE"], "default": "NEW"},
            "aliases": ["status"],
        },
    ],
}


def test_parse_builds_immutable_nodes_with_full_names_and_refs() -> None:
    """Named types carry full names; later uses are Refs resolved through the table."""
    schema = parse_schema(SAMPLE)
    root = schema.root
    assert isinstance(root, Record) and root.name == "t.Order" and root.doc == "An order."
    assert list(schema.named) == ["t.Order", "t.Line", "t.Tag", "t.State"]
    lines = root.fields[2].type
    assert isinstance(lines, Array) and isinstance(lines.items, Record)
    first = root.fields[3].type
    assert isinstance(first, Union) and first.branches[1] == Ref("t.Line")
    assert schema.resolve(first.branches[1]) is lines.items
    assert isinstance(root.fields[4].type, Map)
    assert isinstance(schema.named["t.Tag"], Fixed) and isinstance(schema.named["t.State"], Enum)
    id_type = root.fields[0].type
    assert isinstance(id_type, Primitive) and id_type.logical == "uuid"
    assert not root.fields[0].has_default and root.fields[3].has_default
    with pytest.raises(dataclasses.FrozenInstanceError):
        root.name = "other"  # type: ignore[misc]


def test_json_form_round_trips() -> None:
    """to_json(parse(x)) is the normalized x, and parsing it again gives an equal model."""
    schema = parse_schema(SAMPLE)
    written = to_json(schema)
    assert written["name"] == "t.Order" and "namespace" not in written
    assert parse_schema(written) == schema
    assert to_json(parse_schema(written)) == written


def test_canonical_form_matches_fastavro_for_every_example_schema() -> None:
    """The model's Parsing Canonical Form is fastavro's, for every loaded version."""
    registry = load_directory(REPO / "schemas")
    for version in registry:
        assert canonical_form(version.model) == to_parsing_canonical_form(version.schema)
    assert canonical_form(parse_schema(SAMPLE)) == to_parsing_canonical_form(SAMPLE)


def test_visitor_dispatches_on_the_node_kind() -> None:
    """A visitor counting kinds sees every node once, and follows refs by default."""

    class Kinds(Visitor[None, list[str]]):
        def primitive(self, node: Primitive, arg: None) -> list[str]:
            return [node.kind]

        def record(self, node: Record, arg: None) -> list[str]:
            return ["record", *(k for f in node.fields for k in self.visit(f.type, None))]

        def enum(self, node: Enum, arg: None) -> list[str]:
            return ["enum"]

        def fixed(self, node: Fixed, arg: None) -> list[str]:
            return ["fixed"]

        def array(self, node: Array, arg: None) -> list[str]:
            return ["array", *self.visit(node.items, None)]

        def map(self, node: Map, arg: None) -> list[str]:
            return ["map", *self.visit(node.values, None)]

        def union(self, node: Union, arg: None) -> list[str]:
            return ["union", *(k for b in node.branches for k in self.visit(b, None))]

    schema = parse_schema(SAMPLE)
    kinds = Kinds(schema).visit(schema.root, None)
    assert kinds.count("record") == 4  # Order, Line, and Line again through two refs
    assert kinds.count("fixed") == 3 and kinds.count("enum") == 1


def test_unhandled_kinds_name_the_visitor() -> None:
    """A visitor without a method for a kind raises NotImplementedError naming both."""

    class OnlyPrimitives(Visitor[None, str]):
        def primitive(self, node: Primitive, arg: None) -> str:
            return node.kind

    with pytest.raises(NotImplementedError, match="OnlyPrimitives does not handle arrays"):
        OnlyPrimitives(Schema(Primitive("null"))).visit(Array(Primitive("int")), None)


def test_labels() -> None:
    """type_label describes nodes, following references when given the schema."""
    schema = parse_schema(SAMPLE)
    assert type_label(schema.root.fields[3].type, schema) == "union[null, record t.Line]"  # type: ignore[attr-defined]
    fragment = parse_fragment({"type": "map", "values": ["null", "x.Thing"]})
    assert type_label(fragment) == "map<union[null, x.Thing]>"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"type": "record", "name": "R", "fields": [{"name": "x", "type": "Nope"}]}, "unknown"),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "x", "type": "int", "default": "a"}],
            },
            "does not match",
        ),
        (["int", "int"], "twice"),
        ([["int"]], "another union"),
        ({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "duplicate"),
        ({"type": "fixed", "name": "F", "size": -1}, "non-negative"),
        ("array", "must be written as an object"),
    ],
)
def test_parse_errors_name_the_problem(raw: object, problem: str) -> None:
    """Invalid schemas raise SchemaError saying what is wrong."""
    with pytest.raises(SchemaError, match=problem):
        parse_schema(raw)
