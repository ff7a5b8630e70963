"""The flat-record encoder writes exactly what the general path writes, and fails alike.

A record whose fields are all strings, ints, longs, booleans, floats or doubles gets the
joined-parts encoder of :mod:`choreo.avro.gen_flat_encoder` from
:meth:`EventSerde.encoder_for`. These tests pin it to ``codec.encode(name,
to_avro(event))`` (the dict encoder): the same bytes for values across every varint
length and table edge, and the same exception type and message for every misfit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from choreo.avro import LocalSchemaRegistry
from choreo.avro.codec import SingleObjectCodec
from choreo.avro.confluent import ConfluentCodec
from choreo.avro.gen_flat_encoder import varint_bytes
from choreo.avro.serde import EventSerde
from choreo.model.events import Event, to_avro

FLAT = {
    "type": "record",
    "name": "Flat",
    "namespace": "t.flat",
    "fields": [
        {"name": "text", "type": "string"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "flag", "type": "boolean"},
        {"name": "ratio", "type": "double"},
        {"name": "single", "type": "float"},
        {"name": "absent", "type": "long", "default": -65},
    ],
}


@dataclass(frozen=True, slots=True)
class Flat(Event):
    """Every flat field kind, a converted timestamp; the schema's ``absent`` has no attribute."""

    __avro_name__: ClassVar[str] = "t.flat.Flat"
    text: str
    small: int
    big: int
    at: dt.datetime
    flag: bool
    ratio: float
    single: float


def _serdes() -> list[EventSerde]:
    registry = LocalSchemaRegistry()
    registry.register(FLAT)
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    codecs = [SingleObjectCodec(registry), ConfluentCodec(client, registry)]
    return [EventSerde(codec, [Flat]) for codec in codecs]


SERDES = _serdes()
IDS = ["single-object", "confluent"]
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EDGES = st.sampled_from(
    [-(2**31), -8193, -8192, -8191, -65, -64, -63, -1, 0, 1, 63, 64, 65, 8191, 8192, 2**31 - 1]
)
FLATS = st.builds(
    Flat,
    text=st.text(max_size=200) | st.sampled_from(["", "x" * 63, "x" * 64, "é" * 32, "€" * 22]),
    small=INT32 | EDGES,
    big=INT64 | EDGES | st.sampled_from([-(2**63), 2**63 - 1, 2**40]),
    at=st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda at: at.replace(microsecond=at.microsecond // 1000 * 1000)),  # millis
    flag=st.booleans(),
    ratio=st.floats(allow_nan=False),
    single=st.floats(width=32, allow_nan=False),
)


def _general(serde: EventSerde, event: Flat) -> bytes:
    return serde.codec.encode("t.flat.Flat", to_avro(event))


def _outcome(call: Any) -> tuple[str, Any]:
    """Return ("ok", result) or (exception type name, message) of ``call()``."""
    try:
        return "ok", call()
    except Exception as exc:  # the point is comparing whatever is raised
        return type(exc).__name__, str(exc)


def test_the_flat_encoder_is_the_one_in_use() -> None:
    """Flat's encoder joins its parts once (no bytearray), reading the attributes."""
    source = SERDES[0].encoder_for(Flat).__choreo_source__  # type: ignore[attr-defined]
    assert "_join((" in source and "bytearray" not in source and "datum.text" in source


@pytest.mark.parametrize("serde", SERDES, ids=IDS)
@settings(max_examples=300, deadline=None)
@given(event=FLATS)
def test_the_flat_encoder_writes_the_bytes_of_the_datum(serde: EventSerde, event: Flat) -> None:
    """Same bytes as the dict encoder for every value; they decode back to the event."""
    expected = _general(serde, event)
    assert serde.encoder_for(Flat)(event) == expected == serde.encode(event)
    assert serde.decode("t.flat.Flat", expected) == event


def _flat(**changes: Any) -> Flat:
    values: dict[str, Any] = {
        "text": "t",
        "small": 1,
        "big": 2,
        "at": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        "flag": False,
        "ratio": 0.5,
        "single": 1.5,
    }
    values.update(changes)
    return Flat(**values)


BAD = [
    {"text": 7},
    {"text": None},
    {"text": b"bytes"},
    {"text": "\ud800"},  # not encodable as UTF-8
    {"small": 2**31},
    {"small": -(2**31) - 1},
    {"small": 1.0},
    {"small": 100.0},
    {"small": 5000.0},  # where a two-byte varint would be written
    {"big": 8000.5},
    {"small": float("nan")},
    {"small": "1"},
    {"small": None},
    {"big": 2**63},
    {"big": 5.5},
    {"at": "yesterday"},
    {"flag": 1},
    {"flag": None},
    {"ratio": "0.5"},
    {"single": 1e300},
    {"single": None},
]


@pytest.mark.parametrize("serde", SERDES, ids=IDS)
@pytest.mark.parametrize("changes", BAD, ids=[next(iter(c)) + str(i) for i, c in enumerate(BAD)])
def test_a_value_that_does_not_fit_fails_as_encode_does(
    serde: EventSerde, changes: dict[str, Any]
) -> None:
    """Same exception type and message as encoding the datum, for every kind of misfit."""
    event = _flat(**changes)
    fast = _outcome(lambda: serde.encoder_for(Flat)(event))
    assert fast == _outcome(lambda: _general(serde, event))
    assert fast[0] != "ok"  # EncodeError; the timestamp's converter raises its own error


@pytest.mark.parametrize("serde", SERDES, ids=IDS)
def test_values_the_dict_path_accepts_are_written_alike(serde: EventSerde) -> None:
    """bool for an int and int for a double (what the general encoder takes) give its bytes."""
    for changes in ({"small": True}, {"big": False}, {"ratio": 3}, {"single": -2}):
        event = _flat(**changes)
        assert _outcome(lambda e=event: serde.encoder_for(Flat)(e)) == _outcome(
            lambda e=event: _general(serde, e)
        )


def test_the_size_limit_applies_with_the_same_message() -> None:
    """A payload over max_size is the same EncodeError on both paths."""
    registry = LocalSchemaRegistry()
    registry.register(FLAT)
    serde = EventSerde(SingleObjectCodec(registry, max_size=64), [Flat])
    event = _flat(text="x" * 100)
    fast = _outcome(lambda: serde.encoder_for(Flat)(event))
    assert fast == _outcome(lambda: _general(serde, event))
    assert fast[0] == "EncodeError" and "exceeds the limit of 64" in fast[1]


@given(st.integers(min_value=0, max_value=2**64 - 1))
@example(0)
@example(127)
@example(128)
@example(16383)  # the last two-byte varint
@example(16384)
@example(2**64 - 1)
def test_varint_bytes_is_the_avro_varint(value: int) -> None:
    """varint_bytes writes 7 bits per byte, low first, the high bit marking continuation."""
    data = varint_bytes(value)
    assert all(b & 0x80 for b in data[:-1]) and data[-1] < 0x80
    assert sum((b & 0x7F) << (7 * i) for i, b in enumerate(data)) == value
