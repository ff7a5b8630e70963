"""The worker's fast envelope reads and writes agree with the envelope module, ids are stable."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.envelope import Envelope, Header, Role
from choreo.errors import EnvelopeError, HandlerError
from choreo.runtime.outbox import pack_headers, unpack_headers
from choreo.runtime.retry import COMPENSATION_RETRY, DEFAULT_RETRY
from choreo.runtime.routing import (
    EVENT_ID_NAMESPACE,
    build_routes,
    carried_headers,
    check_envelope,
    derived_event_id,
    emitted_headers,
    read_envelope,
)
from choreo.runtime.topics import deadletter_topic, topic_for
from choreo.runtime.tracing import child_traceparent, new_traceparent, parse_traceparent

from .fixtures.events import OrderPlaced, StockReleased, StockReserved, StockUnavailable
from .fixtures.shop import build_shop

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@given(parent=TEXT, step=TEXT, index=st.integers(min_value=0, max_value=10_000))
def test_derived_event_id_is_uuid5_of_parent_step_and_index(
    parent: str, step: str, index: int
) -> None:
    """The fast derivation equals uuid.uuid5 over "parent/step/index"."""
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{parent}/{step}/{index}")
    assert derived_event_id(parent, step, index) == str(expected)


def test_derived_event_ids_differ_by_step_and_index() -> None:
    """Two events of one handler, or of two handlers, never share an id."""
    parent = str(uuid.uuid4())
    ids = {derived_event_id(parent, step, i) for step in ("a.b", "a.c") for i in range(3)}
    assert len(ids) == 6


@given(
    event_type=TEXT,
    saga=TEXT,
    service=TEXT,
    step=st.none() | TEXT,
    traced=st.booleans(),
    role=st.sampled_from(list(Role)),
)
def test_read_and_check_envelope_agree_with_from_headers(
    *, event_type: str, saga: str, service: str, step: str | None, traced: bool, role: Role
) -> None:
    """read_envelope/check_envelope return what Envelope.from_headers reads."""
    start = Envelope.start(
        event_type,
        saga=saga,
        service=service,
        step=step,
        traceparent=new_traceparent() if traced else None,
    )
    envelope = start.caused(event_type, role=role, service=service, step=step)
    headers = dict(envelope.to_headers())
    assert read_envelope(headers) == Envelope.from_headers(headers) == envelope
    assert check_envelope(headers) == (
        envelope.event_type,
        envelope.event_id,
        envelope.saga,
        envelope.traceparent,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({Header.ROLE: b"boss"}, "unknown role"),
        ({Header.PRODUCED_AT: b"yesterday"}, "not an integer"),
        ({Header.SAGA: b"\xff"}, "not UTF-8"),
        ({Header.EVENT_ID: b""}, "is empty"),
        ({Header.EVENT_TYPE: b""}, "is empty"),
        ({Header.CORRELATION_ID: None}, "missing header"),
    ],
)
def test_broken_envelopes_are_rejected_with_the_header_named(
    change: dict[str, bytes | None], message: str
) -> None:
    """Each broken or missing header raises EnvelopeError saying which and why."""
    headers: dict[str, bytes] = dict(Envelope.start("a.B", saga="S", service="x").to_headers())
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(EnvelopeError, match=message):
        check_envelope(headers)
    with pytest.raises(EnvelopeError, match=message):
        read_envelope(headers)


def test_emitted_headers_equal_envelope_caused_to_headers() -> None:
    """The worker's pre-built headers are exactly Envelope.caused(...).to_headers()."""
    shop = build_shop()
    routes = build_routes(
        shop.inventory, naming=topic_for, default=DEFAULT_RETRY, compensation=COMPENSATION_RETRY
    )
    incoming = Envelope.start(
        "test.runtime.OrderPlaced",
        saga="Fulfilment",
        service="orders",
        step="orders.start",
        traceparent=new_traceparent(),
    )
    record_headers = incoming.to_headers()
    headers = dict(record_headers)
    route = routes["test.runtime.OrderPlaced"]
    for cls, role in ((StockReserved, Role.STEP), (StockUnavailable, Role.FAILURE)):
        plan = route.plan(cls, "Fulfilment")
        assert plan.role is role
        event_id = derived_event_id(incoming.event_id, "inventory.reserve", 0)
        trace = child_traceparent(incoming.traceparent or "", event_id)
        at = ("choreo-produced-at", b"1700000000000")
        built = emitted_headers(plan, event_id, carried_headers(record_headers, headers, at), trace)
        expected = Envelope(
            event_type=plan.event_type,
            event_id=event_id,
            correlation_id=incoming.correlation_id,
            saga="Fulfilment",
            role=role,
            service="inventory",
            produced_at_ms=1700000000000,
            causation_id=incoming.event_id,
            step="inventory.reserve",
            traceparent=trace,
        )
        assert list(built) == expected.to_headers()


def test_compensation_plans_name_the_undone_step_and_undeclared_types_fail() -> None:
    """A compensation's events carry the undone step; an undeclared class is a HandlerError."""
    shop = build_shop(retry=None)
    routes = build_routes(
        shop.inventory, naming=topic_for, default=DEFAULT_RETRY, compensation=COMPENSATION_RETRY
    )
    release = routes["test.runtime.PaymentDeclined"]
    plan = release.plan(StockReleased, "Fulfilment")
    assert (plan.role, plan.step, plan.topic) == (
        Role.COMPENSATION,
        "inventory.reserve",
        "test.runtime.StockReleased",
    )
    assert release.retry is COMPENSATION_RETRY
    with pytest.raises(HandlerError, match="does not declare"):
        release.plan(OrderPlaced, "Fulfilment")


def test_child_traceparent_keeps_the_trace_and_takes_the_span_from_the_event_id() -> None:
    """A child shares its parent's trace id and flags; an invalid parent starts a new trace."""
    parent = new_traceparent()
    event_id = str(uuid.uuid4())
    child = child_traceparent(parent, event_id)
    parsed, parsed_parent = parse_traceparent(child), parse_traceparent(parent)
    assert parsed is not None and parsed_parent is not None
    assert parsed[0] == parsed_parent[0]
    assert parsed[1] == event_id.replace("-", "")[-16:]
    assert parsed[2] == parsed_parent[2]
    fresh = parse_traceparent(child_traceparent("00-garbage", event_id))
    assert fresh is not None and fresh[0] != parsed[0]
    assert parse_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert parse_traceparent("01-" + "a" * 32 + "-" + "1" * 16 + "-01") is None


def test_topics_default_to_the_event_type_and_one_dead_letter_topic_per_service() -> None:
    """topic_for is the identity on full names; dead letters go to choreo.deadletter.<svc>."""
    assert topic_for("shop.orders.OrderCreated") == "shop.orders.OrderCreated"
    assert deadletter_topic("inventory") == "choreo.deadletter.inventory"


@given(st.lists(st.tuples(TEXT, st.binary(max_size=64)), max_size=12))
def test_packed_headers_round_trip(headers: list[tuple[str, bytes]]) -> None:
    """pack_headers then unpack_headers gives the headers back, in order."""
    assert unpack_headers(pack_headers(headers)) == headers
