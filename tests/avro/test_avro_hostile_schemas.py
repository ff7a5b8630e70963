"""Foreign writer schemas (a registry's answer, a file's header) cannot exhaust choreo.

The decoder compiler measures a schema before generating code for it: the expansion of
named types, the nesting depth and the generated size are bounded, and a schema over a
bound is refused with an error naming the limit. Through a codec, every such refusal is
a DecodeError.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from choreo.avro import LocalSchemaRegistry, load_directory
from choreo.avro.compiler import CompileLimitError, CompileLimits, DecodeLimits, compile_decoder
from choreo.avro.confluent import ConfluentCodec
from choreo.avro.lint import measure
from choreo.avro.parse import parse_schema
from choreo.errors import DecodeError, SchemaError

REPO = Path(__file__).resolve().parents[2]


def reuse_bomb(levels: int, width: int) -> dict[str, Any]:
    """Return a record whose ``width`` fields all use the next level's record, ``levels`` deep.

    Written once, each record is defined at its first use and referenced by name after, so
    the JSON stays small while the full expansion has ``width ** levels`` leaves.
    """

    def level(i: int) -> Any:
        if i == levels:
            return "long"
        first = level(i + 1)
        rest = f"x.R{i + 1}" if i + 1 < levels else "long"
        fields = [{"name": f"f{j}", "type": first if j == 0 else rest} for j in range(width)]
        return {"type": "record", "name": f"R{i}", "namespace": "x", "fields": fields}

    schema = level(0)
    assert isinstance(schema, dict)
    return schema


def nested_arrays(depth: int) -> str:
    """Return the JSON text of ``depth`` arrays nested around a long."""
    return '{"type":"array","items":' * depth + '"long"' + "}" * depth


def test_a_small_schema_reusing_a_named_type_is_refused_by_expansion() -> None:
    """A 1.5 KB schema expanding to 56,000 types is refused, naming max_nodes, cheaply."""
    schema = reuse_bomb(6, 6)
    assert len(json.dumps(schema)) < 1600
    tracemalloc.start()
    try:
        with pytest.raises(CompileLimitError, match="max_nodes=5000") as caught:
            compile_decoder(schema)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "expands to 55987 types" in str(caught.value)
    assert peak < 20 * 1024 * 1024  # the old compiler went past 1 GiB on this schema


def test_a_larger_bomb_is_measured_in_linear_time() -> None:
    """A 5.7 KB schema whose expansion has 10^15 leaves is measured without expanding it."""
    schema = reuse_bomb(15, 10)
    assert 5000 < len(json.dumps(schema)) < 7000
    assert measure(schema).nodes > 10**15
    with pytest.raises(CompileLimitError, match="max_nodes"):
        compile_decoder(schema)


def test_the_expansion_limit_is_configurable() -> None:
    """A bomb within a raised limit compiles, and the decoder reads what fastavro wrote."""
    schema = reuse_bomb(3, 4)  # 85 types
    with pytest.raises(CompileLimitError):
        compile_decoder(schema, limits=DecodeLimits(compile=CompileLimits(max_nodes=50)))
    decoder = compile_decoder(schema, limits=DecodeLimits(compile=CompileLimits(max_nodes=100)))
    leaf = {f"f{j}": j for j in range(4)}
    mid = {f"f{j}": leaf for j in range(4)}
    datum = {f"f{j}": mid for j in range(4)}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), datum)
    assert decoder(buffer.getvalue(), 0) == datum


def test_nesting_limits_name_themselves() -> None:
    """Too many nested records or collections are refused before any code is generated."""
    records: Any = "long"
    for i in range(40):
        records = {"type": "record", "name": f"N{i}", "fields": [{"name": "x", "type": records}]}
    with pytest.raises(CompileLimitError, match="max_depth=32"):
        compile_decoder(records)
    with pytest.raises(CompileLimitError, match="max_collections=9"):
        compile_decoder(json.loads(nested_arrays(12)))
    assert compile_decoder(json.loads(nested_arrays(9)))(b"\x00", 0) == []


def test_deep_json_is_a_schema_error_not_recursion() -> None:
    """JSON nested past the parser's bound raises SchemaError (the walk is iterative)."""
    with pytest.raises(SchemaError, match="nested deeper than 128"):
        parse_schema(json.loads(nested_arrays(300)))


@pytest.fixture
def confluent() -> tuple[ConfluentCodec, Any]:
    """A Confluent codec over a fresh mock registry and the example schemas."""
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    return ConfluentCodec(client, load_directory(REPO / "schemas")), client


@pytest.mark.parametrize(
    "text",
    [
        nested_arrays(50_000),  # json.loads itself would recurse past the limit
        nested_arrays(400),
        json.dumps(reuse_bomb(6, 6)),
        json.dumps(reuse_bomb(15, 10)),
        '{"type": "record", "name": "x.R", "fields": "' + "a" * 10_000 + '"}',
        "[" * 10_000,
    ],
    ids=["deep-50000", "deep-400", "bomb-1.5KB", "bomb-5.7KB", "bad-fields", "bad-json"],
)
def test_hostile_registry_answers_are_decode_errors(
    confluent: tuple[ConfluentCodec, Any], text: str
) -> None:
    """Whatever schema text the registry returns, decoding raises DecodeError only."""
    codec, client = confluent
    schema_id = client.register_schema(f"s-{uuid.uuid4().hex}", Schema(text, "AVRO"))
    data = b"\x00" + schema_id.to_bytes(4, "big") + b"\x00\x00"
    with pytest.raises(DecodeError):
        codec.decode_any(data)
    with pytest.raises(DecodeError):
        codec.decode(data, "shop.orders.OrderCreated")


# --- schema resolution: a writer-only field of a type the reader does not know -----------

V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "t",
    "fields": [{"name": "id", "type": "string"}],
}
V2 = {
    "type": "record",
    "name": "Order",
    "namespace": "t",
    "fields": [
        {"name": "id", "type": "string"},
        {
            "name": "shipping",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [
                    {"name": "city", "type": "string"},
                    {
                        "name": "kind",
                        "type": {"type": "enum", "name": "Kind", "symbols": ["HOME", "WORK"]},
                    },
                    {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 2}},
                ],
            },
        },
        {"name": "billing", "type": ["null", "Address"], "default": None},
        {"name": "history", "type": {"type": "array", "items": "Address"}},
        {"name": "kinds", "type": {"type": "map", "values": "Kind"}},
    ],
}


def v2_datum() -> dict[str, Any]:
    """Return a v2 order using the new named types everywhere."""
    home = {"city": "Lyon", "kind": "HOME", "code": b"69"}
    work = {"city": "Paris", "kind": "WORK", "code": b"75"}
    return {"id": "o-1", "shipping": home, "billing": work, "history": [work, home], "kinds": {}}


def fastavro_bytes(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """Return fastavro's binary encoding of ``datum``."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), datum)
    return buffer.getvalue()


def test_v1_reader_skips_fields_of_named_types_it_does_not_define() -> None:
    """A v1 reader reads v2 data whose new fields use new named types, as fastavro does."""
    body = fastavro_bytes(V2, v2_datum())
    expected = fastavro.schemaless_reader(
        io.BytesIO(body), fastavro.parse_schema(V2), fastavro.parse_schema(V1)
    )
    assert compile_decoder(V2, V1)(body, 0) == expected == {"id": "o-1"}


def test_v1_consumer_reads_v2_records_through_the_registry() -> None:
    """A consumer holding only v1 decodes v2 records whose writer schema comes by id."""
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    v1_registry = LocalSchemaRegistry()
    v1_registry.register(V1)
    schema_id = client.register_schema("t.Order", Schema(json.dumps(V2), "AVRO"))
    data = b"\x00" + schema_id.to_bytes(4, "big") + fastavro_bytes(V2, v2_datum())
    assert ConfluentCodec(client, v1_registry).decode(data, "t.Order") == {"id": "o-1"}


def test_skipped_fields_are_still_validated() -> None:
    """Bytes of a skipped field are checked as strictly as read ones (enum index here)."""
    body = bytearray(fastavro_bytes(V2, v2_datum()))
    kind_offset = 1 + 3 + 1 + 4  # id "o-1", then the city "Lyon"
    assert body[kind_offset] == 0  # HOME
    body[kind_offset] = 4  # index 2: out of range for two symbols
    with pytest.raises(Exception, match="enum index out of range"):
        compile_decoder(V2, V1)(bytes(body), 0)


def test_codecs_take_compile_limits() -> None:
    """A codec's compile_limits bound the local schemas it encodes with too."""
    from choreo.avro.codec import SingleObjectCodec

    registry = load_directory(REPO / "schemas")
    tight = SingleObjectCodec(registry, compile_limits=CompileLimits(max_nodes=2))
    with pytest.raises(CompileLimitError, match="max_nodes=2"):
        tight.encode("shop.orders.OrderCreated", {})
    data = SingleObjectCodec(registry).encode(
        "shop.payments.PaymentDeclined", {"order_id": "o", "reason": "r"}
    )
    with pytest.raises(DecodeError, match="max_nodes=2"):
        tight.decode_any(data)


def test_union_branches_resolve_by_full_name_first() -> None:
    """Two named types sharing a simple name resolve to the same full name, as in fastavro.

    Matching by unqualified name alone picked ``x.A`` for data written as ``y.A`` (found
    by the fuzz suite).
    """
    union = [
        {"type": "fixed", "name": "A", "namespace": "x", "size": 1},
        {"type": "fixed", "name": "A", "namespace": "y", "size": 3},
    ]
    schema = {"type": "record", "name": "t.R", "fields": [{"name": "u", "type": union}]}
    datum = {"u": b"abc"}
    body = fastavro_bytes(schema, datum)
    assert compile_decoder(schema, json.loads(json.dumps(schema)))(body, 0) == datum
    assert fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema)) == datum
