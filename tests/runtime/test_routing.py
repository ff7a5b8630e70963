"""The worker's fast envelope reads and writes agree with the envelope module, ids are stable."""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreo.errors import EnvelopeError, HandlerError
from choreo.model.envelope import Envelope, Header, Role
from choreo.model.topics import deadletter_topic, topic_for
from choreo.runtime.retry import COMPENSATION_RETRY, DEFAULT_RETRY
from choreo.runtime.routing import (
    EVENT_ID_NAMESPACE,
    Route,
    build_routes,
    check_envelope,
    derived_event_id,
    fields_from,
    read_envelope,
    scan_headers,
)
from choreo.runtime.tracing import (
    all_valid,
    child_traceparent,
    new_traceparent,
    parse_traceparent,
)
from choreo.store.outbox import pack_headers, unpack_headers
from choreo.transports.base import Record

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


def _inventory_routes() -> dict[str, Route]:
    """Return the routes of the test shop's inventory service."""
    shop = build_shop(retry=None)
    return build_routes(
        shop.inventory, naming=topic_for, default=DEFAULT_RETRY, compensation=COMPENSATION_RETRY
    )


def test_compensation_plans_name_the_undone_step_and_undeclared_types_fail() -> None:
    """A compensation's events carry the undone step; an undeclared class is a HandlerError."""
    routes = _inventory_routes()
    release = routes["test.runtime.PaymentDeclined"]
    plan = release.plan(StockReleased, "Fulfilment")
    assert (plan.role, plan.step, plan.topic) == (
        Role.COMPENSATION,
        "inventory.reserve",
        "test.runtime.StockReleased",
    )
    assert release.retry is COMPENSATION_RETRY
    reserve = routes["test.runtime.OrderPlaced"]
    assert reserve.plan(StockReserved, "Fulfilment").role is Role.STEP
    assert reserve.plan(StockUnavailable, "Fulfilment").role is Role.FAILURE
    with pytest.raises(HandlerError, match="does not declare"):
        release.plan(OrderPlaced, "Fulfilment")


def test_emit_plans_cached_per_route_stay_bounded_whatever_saga_names_records_carry() -> None:
    """Saga names come from the records: a stream of new ones does not grow the cache."""
    routes = _inventory_routes()
    reserve = routes["test.runtime.OrderPlaced"]
    first = reserve.plan(StockReserved, "Fulfilment")
    for index in range(2000):
        plan = reserve.plan(StockReserved, f"saga-{index}")
        assert (plan.role, plan.topic) == (Role.STEP, "test.runtime.StockReserved")
    assert len(reserve.plans) == 256
    assert reserve.plan(StockReserved, "Fulfilment") is first  # the early ones stay cached


def test_emitted_records_follow_the_plan_of_each_class_and_saga_in_any_order() -> None:
    """The emitter reuses the previous event's plan only for the same class and saga.

    StockReserved ends saga A (completed) and is a step of saga B: its role header
    follows the saga of each incoming record, whatever came just before.
    """
    from choreo.choreography.service import Saga, Service
    from choreo.runtime.emit import Emitter

    from .fixtures.serdes import avro_serde

    ends = Saga("A", start=OrderPlaced, completed=StockReserved, failed=StockUnavailable)
    goes_on = Saga("B", start=OrderPlaced, completed=StockReleased, failed=StockUnavailable)
    inventory = Service("inventory", sagas=[ends, goes_on])

    @inventory.step(on=OrderPlaced, emits=StockReserved, fails_with=StockUnavailable)
    def reserve(event: OrderPlaced) -> StockReserved:  # pragma: no cover - never called
        raise AssertionError

    route = build_routes(
        inventory, naming=topic_for, default=DEFAULT_RETRY, compensation=COMPENSATION_RETRY
    )["test.runtime.OrderPlaced"]
    emitter = Emitter(avro_serde().encode, tracing=False)
    reserved, unavailable = StockReserved("o", "book", 1), StockUnavailable("o", "book")
    order = [
        (reserved, "A", Role.COMPLETED),
        (reserved, "A", Role.COMPLETED),
        (reserved, "B", Role.STEP),
        (reserved, "A", Role.COMPLETED),
        (unavailable, "A", Role.FAILED),
        (reserved, "A", Role.COMPLETED),
        (unavailable, "B", Role.FAILED),
        (reserved, "B", Role.STEP),
    ]
    for index, (event, saga, role) in enumerate(order):
        parent = str(uuid.uuid4())
        incoming = Envelope("test.runtime.OrderPlaced", parent, "c", saga, Role.START, "s", 1)
        record = emitter.emit_one(route, fields_from(dict(incoming.to_headers())), event)
        headers = dict(record.headers)
        assert headers[Header.ROLE] == role.value.encode(), index
        assert headers[Header.EVENT_TYPE] == event.__avro_name__.encode(), index
        assert headers[Header.SAGA] == saga.encode(), index
        assert record.topic == event.__avro_name__
        assert record.id == derived_event_id(parent, "inventory.reserve", 0)


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


UUID_TEXT = st.uuids().map(str)
TRACES = st.one_of(
    st.none(),
    st.builds(new_traceparent),
    st.text(alphabet="0123456789abcdef-", max_size=60),  # mostly invalid: a new trace
)


@settings(deadline=None)  # builds a worker per example: slow on a loaded machine, not wrong
@given(
    parent=st.one_of(UUID_TEXT, TEXT),
    trace=TRACES,
    count=st.integers(min_value=1, max_value=6),
    tracing=st.booleans(),
)
def test_the_workers_encoding_equals_the_reference_derivations(
    *, parent: str, trace: str | None, count: int, tracing: bool
) -> None:
    """Emitted ids, headers and traceparents equal derived_event_id, child_traceparent and
    Envelope.caused(...).to_headers(), for one event or several."""
    from choreo.runtime import Worker, WorkerConfig
    from choreo.transports.memory import MemoryTransport

    from .fixtures.serdes import avro_serde

    shop = build_shop()
    worker = Worker(
        shop.inventory, MemoryTransport(), avro_serde(), config=WorkerConfig(tracing=tracing)
    )
    worker.emitter.produced_at = (Header.PRODUCED_AT, b"1700000000000")
    incoming = Envelope(
        "test.runtime.OrderPlaced",
        parent,
        "cid-1",
        "Fulfilment",
        Role.START,
        "orders",
        1,
        step="orders.start",
    )
    record_headers = incoming.to_headers()
    if trace is not None:
        record_headers.append((Header.TRACEPARENT, trace.encode()))
    fields = scan_headers(record_headers) or fields_from(dict(record_headers))
    route = worker.dispatcher.routes["test.runtime.OrderPlaced"]
    events = [StockReserved(f"o{n}", "book", n) for n in range(count)]
    if count == 1:  # the whole hot path: batch checks, scan, dispatch, emit_one
        record = Record("test.runtime.OrderPlaced", 0, 0, b"cid-1", b"", tuple(record_headers))
        route.func = lambda event: events[0]
        route.takes_context = False
        worker.dispatcher.decode = _Decoding(worker.serde).decode
        worker.dispatcher.decoder_for = None  # decode every type with the stub above
        built = worker.dispatcher.dispatch([record]).records
    else:
        built = worker.emitter.emit(route, fields, events)
    for index, (event, record) in enumerate(zip(events, built, strict=True)):
        event_id = derived_event_id(parent, "inventory.reserve", index)
        assert str(uuid.UUID(event_id)) == event_id and uuid.UUID(event_id).version == 5
        headers = dict(record.headers)
        child = headers.pop(Header.TRACEPARENT, None)
        if trace is None or not tracing:
            assert child is None
        else:
            assert child is not None
            span = child.decode()[36:52]
            assert span == event_id.replace("-", "")[-16:]
            if parse_traceparent(trace) is not None:
                assert child.decode() == child_traceparent(trace, event_id)
            else:  # an invalid parent starts a new, valid trace
                assert parse_traceparent(child.decode()) is not None
        expected = incoming.caused(
            "test.runtime.StockReserved",
            role=Role.STEP,
            service="inventory",
            step="inventory.reserve",
        )
        expected = dataclasses.replace(
            expected, event_id=event_id, produced_at_ms=1700000000000, traceparent=None
        )
        assert list(headers.items()) == expected.to_headers()
        assert (record.id, record.topic, record.key) == (
            event_id,
            "test.runtime.StockReserved",
            b"cid-1",
        )
        assert record.value == worker.serde.encode(event)
    worker.close()


class _Decoding:
    """A serde that decodes any payload as an OrderPlaced (the test feeds no real payload)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def encode(self, event: Any) -> bytes:
        return bytes(self.inner.encode(event))

    def decode(self, event_type: str, data: bytes) -> Any:
        return OrderPlaced("o", "book", 1, 1)


@given(
    event_type=TEXT,
    saga=TEXT,
    service=TEXT,
    step=st.none() | TEXT,
    traced=st.booleans(),
    role=st.sampled_from(list(Role)),
    caused=st.booleans(),
)
def test_scan_headers_reads_what_check_envelope_reads(
    *,
    event_type: str,
    saga: str,
    service: str,
    step: str | None,
    traced: bool,
    role: Role,
    caused: bool,
) -> None:
    """For choreo's own layouts scan_headers equals fields_from; others fall back (None)."""
    envelope = Envelope.start(
        event_type,
        saga=saga,
        service=service,
        step=step,
        traceparent=new_traceparent() if traced else None,
    )
    if caused:
        envelope = envelope.caused(event_type, role=role, service=service, step=step)
    headers = envelope.to_headers()
    scanned = scan_headers(headers)
    assert fields_from(dict(headers)) == (
        scanned if scanned is not None else fields_from(dict(headers))
    )
    if step is not None:  # the layouts the fast path covers (every one choreo writes)
        assert scanned is not None
    assert scan_headers(list(reversed(headers))) is None  # another order: the dict path


@pytest.mark.parametrize(
    ("change", "position"),
    [
        (b"boss", 4),  # unknown role
        (b"yesterday", 6),  # produced-at not an integer
        (b"-5", 6),  # valid for int(), left to the precise path
        (b"\xff", 3),  # saga not UTF-8
        (b"\xff", 5),  # service not UTF-8
        (b"", 1),  # empty event id
        (b"", 0),  # empty event type
        (b"\xff", 8),  # traceparent not UTF-8
        (b"\xff", 2),  # correlation id not UTF-8
        (b"x.\xc3", 7),  # step not UTF-8 (a cut two-byte character)
        ("x", 5),  # a str, not bytes: never taken as valid
        ("x.start", 7),
        (b"\xff", 0),  # event type not UTF-8
        ("a.B", 0),  # event type and saga as str
        ("S", 3),
    ],
)
@pytest.mark.parametrize("traced", [True, False])
def test_scan_headers_leaves_doubtful_envelopes_to_check_envelope(
    change: bytes, position: int, traced: bool
) -> None:
    """Anything the fast path does not accept outright goes to the precise (dict) path.

    For a start event with a traceparent (nine headers) and without (eight: tracing off).
    """
    if position == 8 and not traced:
        position = 7  # no traceparent to spoil: spoil the step instead
    trace = new_traceparent() if traced else None
    envelope = Envelope.start("a.B", saga="S", service="x", step="x.start", traceparent=trace)
    headers = envelope.to_headers()
    assert len(headers) == (9 if traced else 8)
    assert scan_headers(headers) is not None
    headers[position] = (headers[position][0], change)
    assert scan_headers(headers) is None


@pytest.mark.parametrize("change", [b"\xff", b"\xe2\x82", "cause as str"])
@pytest.mark.parametrize("traced", [True, False])
def test_scan_headers_leaves_a_doubtful_causation_id_to_check_envelope(
    change: bytes | str, traced: bool
) -> None:
    """A caused event's causation id must be UTF-8 bytes too, with or without traceparent."""
    start = Envelope.start("a.B", saga="S", service="x", step="x.start", traceparent=None)
    caused = start.caused("a.C", role=Role.STEP, service="y", step="y.step")
    headers = caused.to_headers()
    if traced:
        headers.append((Header.TRACEPARENT, new_traceparent().encode()))
    assert scan_headers(headers) is not None
    position = [name for name, _ in headers].index(Header.CAUSATION_ID)
    headers[position] = (Header.CAUSATION_ID, change)  # type: ignore[assignment]
    assert scan_headers(headers) is None


W3C_00 = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def _mutated(draw: st.DrawFn) -> bytes:
    """Draw a traceparent: valid, or valid with one character changed, cut or extended."""
    value = bytearray(new_traceparent().encode())
    kind = draw(st.sampled_from(["valid", "change", "cut", "extend", "zero-trace", "zero-span"]))
    if kind == "change":
        value[draw(st.integers(0, len(value) - 1))] = ord(draw(st.sampled_from("0aAg-\n 9f")))
    elif kind == "cut":
        del value[draw(st.integers(0, len(value) - 1))]
    elif kind == "extend":
        value.insert(draw(st.integers(0, len(value))), ord(draw(st.sampled_from("0a-\n"))))
    elif kind == "zero-trace":
        value[3:35] = b"0" * 32
    elif kind == "zero-span":
        value[36:52] = b"0" * 16
    return bytes(value)


@given(st.lists(st.one_of(st.none(), st.composite(_mutated)()), max_size=8))
def test_all_valid_checks_a_batch_like_the_w3c_pattern_one_by_one(
    traces: list[bytes | None],
) -> None:
    """all_valid is True exactly when every non-None item matches the version-00 pattern."""
    expected = all(
        t is None or (t.isascii() and W3C_00.fullmatch(t.decode()) is not None) for t in traces
    )
    assert all_valid(traces) is expected
