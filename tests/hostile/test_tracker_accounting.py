"""The tracker accounts for every record: only a valid envelope starts or changes a saga."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from choreo.cli import main
from choreo.model.envelope import Envelope, Header
from choreo.safety.terminal import console
from choreo.tracker.render import trace_tree
from choreo.tracker.sources import write_container_file
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record
from choreo.viewer.api import TraceApi

from .strategies import hostile_records, one_case

Headers = list[tuple[str, bytes | None]]


def start_headers(cid: str = "c-1") -> Headers:
    """Return a valid start envelope's headers."""
    envelope = Envelope.start("shop.OrderCreated", saga="Fulfilment", service="order",
                              correlation_id=cid)
    return list(envelope.to_headers())


def record(headers: Headers, value: bytes | None = b"payload", offset: int = 0) -> Record:
    return Record("shop.OrderCreated", 0, offset, b"c-1", value, tuple(headers))  # type: ignore[arg-type]


def replaced(name: str, value: bytes | None) -> Callable[[Headers], Headers]:
    return lambda headers: [(n, value if n == name else v) for n, v in headers]


BROKEN = {
    "null header choreo-correlation-id": replaced(Header.CORRELATION_ID, None),
    "empty header choreo-correlation-id": replaced(Header.CORRELATION_ID, b""),
    "null header choreo-saga": replaced(Header.SAGA, None),
    "null header choreo-step": lambda h: [*h, (Header.STEP, None)],
    "duplicate header choreo-correlation-id": lambda h: [*h, (Header.CORRELATION_ID, b"c-2")],
    "duplicate header choreo-role": lambda h: [*h, (Header.ROLE, b"start")],
    "missing header choreo-role": lambda h: [(n, v) for n, v in h if n != Header.ROLE],
    "unknown role in choreo-role": replaced(Header.ROLE, b"boss"),
    "header choreo-id is not UTF-8": replaced(Header.EVENT_ID, b"\xff\xfe"),
    "empty header choreo-id": replaced(Header.EVENT_ID, b""),
    "header choreo-service longer than 1024 bytes": replaced(Header.SERVICE, b"s" * 5000),
    "header choreo-produced-at is not an integer": replaced(Header.PRODUCED_AT, b"soon"),
    "header choreo-produced-at out of the 64-bit range": replaced(
        Header.PRODUCED_AT, str(2**70).encode()
    ),
}


@pytest.mark.parametrize("reason", list(BROKEN))
def test_a_broken_envelope_is_counted_under_its_reason_and_starts_no_saga(reason: str) -> None:
    """Each way an envelope can be broken is named; no saga appears."""
    tracker = Tracker()
    tracker.feed(record(BROKEN[reason](start_headers())))
    assert tracker.total() == 0
    assert tracker.stats.reasons == {reason: 1}
    assert tracker.stats.invalid == 1


def test_records_without_choreo_headers_are_ignored_not_unreadable() -> None:
    """A foreign record (no choreo headers, or null foreign headers) is counted as ignored."""
    tracker = Tracker()
    tracker.feed(record([("x-trace", None), ("x-trace", b"2")]))
    assert tracker.stats.ignored == 1 and tracker.stats.invalid == 0
    tracker.feed(record([*start_headers(), ("x-other", None), ("x-other", b"")], offset=1))
    assert tracker.total() == 1  # foreign headers may repeat or be null


def test_a_poison_payload_with_valid_headers_makes_no_phantom_saga() -> None:
    """With a decoder, a payload that does not decode (or names another type) is unreadable."""

    def decode(raw: bytes) -> tuple[str, dict[str, object]]:
        if raw.startswith(b"{"):
            return raw[1:].decode(), {}
        raise ValueError("not a payload")

    tracker = Tracker(decode=decode)
    tracker.feed(record(start_headers("poison"), value=b"\x00garbage"))
    tracker.feed(record(start_headers("other-type"), value=b"{shop.Other", offset=1))
    tracker.feed(record(start_headers("tombstone"), value=None, offset=2))
    tracker.feed(record(start_headers("good"), value=b"{shop.OrderCreated", offset=3))
    assert [t.correlation_id for t in tracker.find()] == ["good"]
    assert tracker.stats.reasons == {
        "payload does not decode": 1,
        "payload type differs from header choreo-type": 1,
        "no payload": 1,
    }


def dead_letter_headers(original: Headers, reason: str = "undecodable: bad bytes") -> Headers:
    return [
        *original,
        (Header.DLQ_REASON, reason.encode()),
        (Header.DLQ_ERROR_CLASS, b"choreo.errors.DecodeError"),
        (Header.DLQ_SERVICE, b"inventory"),
        (Header.DLQ_FAILED_AT, b"1700000000123"),
        (Header.DLQ_SOURCE_TOPIC, b"shop.OrderCreated"),
        (Header.DLQ_SOURCE_PARTITION, b"0"),
        (Header.DLQ_SOURCE_OFFSET, b"7"),
    ]


def test_a_dead_letter_appears_on_its_saga_timeline_with_the_reason() -> None:
    """The tracker notes a dead letter under its saga: CLI tree and viewer detail show it."""
    tracker = Tracker()
    headers = start_headers("c-dlq")
    tracker.feed(record(headers))
    version = tracker.version
    letter = Record("choreo.deadletter.inventory", 0, 0, b"c-dlq", b"x",
                    tuple(dead_letter_headers(headers, "undecodable: [/x] bad \x1b[31m")))
    tracker.feed(letter)
    assert tracker.version > version
    trace = tracker.get("c-dlq")
    assert trace is not None and len(trace.events) == 1
    (note,) = trace.dead_letters
    assert (note.reason, note.service, note.failed_at_ms) == ("undecodable", "inventory",
                                                               1700000000123)
    assert note.source == "shop.OrderCreated/0@7"
    out = console(width=300, file=None)
    with out.capture() as captured:
        out.print(trace_tree(trace))
    shown = captured.get()
    assert "dead-lettered by inventory" in shown and "[/x] bad \\x1b[31m" in shown
    detail = TraceApi(tracker).saga("c-dlq")
    assert detail is not None
    assert detail["dead_letters"][0]["reason"] == "undecodable"
    assert "dead-lettered" in detail["events"][0]["marks"]
    assert tracker.stats.dead_letters == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=hostile_records(max_records=10))
def test_every_record_is_accounted_for(records: list[Record]) -> None:
    """records = events + duplicates + dead letters + ignored + unreadable, always."""
    with one_case("tracker records", len(records)):
        tracker = Tracker()
        tracker.feed_many(records)
        stats = tracker.stats
        assert stats.records == len(records)
        accounted = stats.events + stats.duplicates + stats.dead_letters + stats.ignored
        assert accounted + stats.invalid == stats.records
        assert sum(stats.reasons.values()) == stats.invalid
        for trace in tracker.find(limit=100):
            assert trace.correlation_id  # no saga without a correlation id
            assert trace.events


def test_sagas_command_shows_unreadable_records_per_reason(tmp_path: Path) -> None:
    """`choreo sagas` says how many records were unreadable and why."""
    path = tmp_path / "log.avro"
    records = [
        record(start_headers("ok")),
        record(BROKEN["unknown role in choreo-role"](start_headers("x")), offset=1),
        record(BROKEN["unknown role in choreo-role"](start_headers("y")), offset=2),
        record([(Header.ROLE, b"[/x]")], offset=3),
    ]
    write_container_file(path, records)
    result = CliRunner().invoke(main, ["sagas", "--file", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "1 without choreo headers, 2 unreadable" in result.output
    assert "unknown role in choreo-role: 2" in result.output
