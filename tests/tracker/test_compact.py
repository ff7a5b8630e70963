"""Packing a saga's events: lossless for UUID and non-UUID ids, causes inside and outside."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreo.model.envelope import Role
from choreo.tracker.compact import Symbols, pack_events, pack_standalone, unpack_events
from choreo.tracker.model import TraceEvent

ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text(min_size=1, max_size=40),
    st.just("12345678-1234-1234-1234-12345678 abc"),
    st.just("12345678-1234-1234-1234-123456789012"),  # a UUID without a letter
    st.just("0000000g-0000-4000-8000-000000000000"),  # not hex
    st.just("00000000-0000-4000-8000-0000000000\u00e9a"),  # not ASCII
    st.just("00000000-0000-4000-8000-00000000 0a0"),  # what bytes.fromhex would skip
)


@st.composite
def histories(draw: st.DrawFn) -> list[TraceEvent]:
    """Draw a list of events with distinct ids whose causes may point inside or outside."""
    event_ids = draw(st.lists(ids, min_size=1, max_size=12, unique=True))
    events = []
    for index, event_id in enumerate(event_ids):
        cause = draw(
            st.one_of(
                st.none(),
                ids,
                st.sampled_from(event_ids[: index + 1]),
            )
        )
        events.append(
            TraceEvent(
                event_id=event_id,
                event_type=draw(st.sampled_from(["a.A", "b.B", "ü.Ü"])),
                role=draw(st.sampled_from(list(Role))),
                service=draw(st.text(max_size=10)),
                produced_at_ms=draw(st.integers(-(2**63), 2**63 - 1)),
                causation_id=cause,
                step=draw(st.one_of(st.none(), st.text(max_size=12))),
                topic=draw(st.text(max_size=12)),
                partition=draw(st.integers(-(2**31), 2**31 - 1)),
                offset=draw(st.integers(-(2**63), 2**63 - 1)),
            )
        )
    return events


@settings(max_examples=200, deadline=None)
@given(events=histories(), uuid_ids=st.booleans())
def test_pack_unpack_roundtrip(events: list[TraceEvent], uuid_ids: bool) -> None:
    """Unpacking gives back exactly the packed events, in the form written and the first one."""
    symbols = Symbols()
    assert unpack_events(pack_events(events, symbols, uuid_ids=uuid_ids), symbols) == events


@settings(max_examples=200, deadline=None)
@given(events=histories())
def test_standalone_fast_path_packs_what_the_general_packer_does(
    events: list[TraceEvent],
) -> None:
    """pack_standalone's one-pass packer writes the bytes of a table numbered as met plus
    pack_events (the general form, which huge sagas still use), and they unpack back."""
    local = Symbols()
    for event in events:
        for text in (event.event_type, event.service, event.topic, event.step):
            if text is not None:
                local.number(text)
    packed = pack_events(events, local, uuid_ids=False)  # the form earlier versions read
    table = b"".join(
        len(raw).to_bytes(2, "little") + raw for raw in (t.encode() for t in local.texts)
    )
    expected = bytes((0xF4,)) + len(local).to_bytes(2, "little") + table + packed
    blob = pack_standalone(events)
    assert blob == expected
    assert unpack_events(blob, Symbols()) == events


def test_a_chain_packs_small() -> None:
    """A chain of UUID-identified events packs into 49 bytes per event (its ids in 16 bytes),
    against 71 in the first form."""
    symbols = Symbols()
    events = []
    previous = None
    for index in range(7):
        event_id = str(uuid.uuid4())
        events.append(
            TraceEvent(event_id, "shop.T", Role.STEP, "svc", 1_700_000_000_000 + index,
                       previous, "svc.step", "shop.T", 0, index)
        )
        previous = event_id
    packed = pack_events(events, symbols)
    assert packed[0] == 0xF5 and len(packed) == 1 + 7 * 49
    assert unpack_events(packed, symbols) == events
    assert len(symbols) == 3
    first = pack_events(events, symbols, uuid_ids=False)
    assert first[0] == 0xF2 and len(first) == 1 + 7 * 71
    assert unpack_events(first, symbols) == events


def test_symbols_are_shared_and_numbered_in_order() -> None:
    """Symbols number each distinct text once, in first-seen order."""
    symbols = Symbols(["a", "b"])
    assert symbols.number("b") == 1
    assert symbols.number("c") == 2
    assert symbols.texts == ["a", "b", "c"]
    copy = "".join(["c"])
    assert symbols.intern(copy) is symbols.texts[2]


def test_a_large_symbol_table_packs_in_the_wide_form() -> None:
    """With more symbols than two bytes can number, events still round-trip (4-byte form)."""
    symbols = Symbols(f"s{index}" for index in range(70_000))
    events = [
        TraceEvent("a", "late.Type", Role.START, "svc", 1, None, None, "t", 0, 0),
        TraceEvent("b", "s69999", Role.STEP, "s65535", 2, "a", "s65534", "t", 0, 1),
        TraceEvent("c", "s1", Role.NOTICE, "svc", 3, "elsewhere", "x", "t", 1, 2),
    ]
    packed = pack_events(events, symbols)
    assert packed[0] == 0xF6
    assert unpack_events(packed, symbols) == events
    first = pack_events(events, symbols, uuid_ids=False)
    assert first[0] == 0xF3
    assert unpack_events(first, symbols) == events


def test_bytes_of_another_format_are_refused() -> None:
    """Unpacking bytes without a known marker raises ValueError; no bytes are no events."""
    assert unpack_events(b"", Symbols()) == []
    with pytest.raises(ValueError, match="marker"):
        unpack_events(b"\x00\x01", Symbols())


@pytest.mark.parametrize("ids", [
    ["00000000-0000-4000-8000-000000000000-00000000", "0000-4000-8000-000000000000"],
    ["00000000-0000-4000-8000-00000000000g", "00000000-0000-4000-8000-000000000001"],
    ["00000000-0000-4000-8000-0000000000AB"],
    ["00000000-0000-4000-8000-0000000000ab", "short"],
])
def test_ids_that_only_look_like_uuids_pack_as_text(ids: list[str]) -> None:
    """A saga whose ids are not all canonical UUIDs (joined they may look like some) keeps
    every id as text, and unpacks to exactly the same events."""
    events = [TraceEvent(event_id, "shop.T", Role.STEP, "svc", 1, None, None, "shop.T", 0, n)
              for n, event_id in enumerate(ids)]
    symbols = Symbols()
    packed = pack_events(events, symbols)
    assert all(event_id.encode() in packed for event_id in ids)
    assert unpack_events(packed, symbols) == events
