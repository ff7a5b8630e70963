"""Summary records: what tracker instances write, read back exactly, and hostile ones refused."""

from __future__ import annotations

import json
import struct

import pytest
from tracker_log import SagaLog, to_records

from choreo.model.envelope import Role
from choreo.tracker import Tracker
from choreo.tracker.compact import Symbols, pack_standalone, unpack_events
from choreo.tracker.entries import Summary
from choreo.tracker.model import SagaState, SagaStatus
from choreo.tracker.summaries import (
    KIND_HEADER,
    MAX_STATS_ENTRIES,
    SummaryError,
    control_key,
    decode_saga,
    decode_stats,
    encode_saga,
    encode_stats,
)
from choreo.transports.base import Record, TopicPartition
from choreo.transports.partitioner import partition_for


def _saga_record(key: bytes | None, value: bytes | None, offset: int = 0) -> Record:
    return Record("sums", 0, offset, key, value, ((KIND_HEADER, b"saga"),))


def _materialized(tracker: Tracker) -> list[Record]:
    """Return the summary records of every saga ``tracker`` changed (as an instance writes)."""
    _, records = tracker.take_summaries()
    return [_saga_record(key, value, n) for n, (key, value) in enumerate(records)]


def test_summary_round_trip_gives_back_the_saga() -> None:
    """A tracker loaded from another's summary records answers like it, events included."""
    source = Tracker()
    source.track_changes()
    logs = [SagaLog().completed(), SagaLog().declined(), SagaLog()]
    logs[2].start()
    source.feed_many(to_records(env for log in logs for env in log.envelopes))
    copy = Tracker()
    assert copy.load_summaries(_materialized(source)) == 3
    assert copy.counts() == source.counts()
    for log in logs:
        assert copy.get(log.cid) == source.get(log.cid)
    assert copy.take_summaries() == ([], [])  # loading is not a change of its own


def test_a_loaded_saga_folds_new_events_like_a_kept_one() -> None:
    """A new owner that loaded a running saga's summary folds its next events correctly."""
    log = SagaLog()
    start = log.start()
    first = Tracker()
    first.track_changes()
    first.feed_many(to_records(log.envelopes))
    owner = Tracker()
    owner.load_summaries(_materialized(first))
    reserved = log.emit(start, "trk.InventoryReserved", Role.STEP, "inventory", "inv")
    log.emit(reserved, "trk.OrderCompleted", Role.COMPLETED, "order")
    owner.feed_many(to_records(log.envelopes))  # the old event again, and the new ones
    trace = owner.get(log.cid)
    assert trace is not None and trace.state is SagaState.COMPLETED
    assert [e.event_id for e in trace.events] == [e.event_id for e in log.envelopes]


def test_standalone_blob_needs_no_shared_symbols() -> None:
    """Events packed standalone unpack with any (even an empty) symbol table."""
    log = SagaLog().completed()
    tracker = Tracker()
    tracker.feed_many(to_records(log.envelopes))
    trace = tracker.get(log.cid)
    assert trace is not None
    assert unpack_events(pack_standalone(trace.events), Symbols()) == trace.events


@pytest.mark.parametrize(
    "blob",
    [
        b"\xf4\x01\x00\xff\xff",  # a symbol claiming 65535 bytes
        b"\xf4\x00\x00\xf4\x00\x00",  # a standalone blob inside one
        b"\xf4\x00\x00\xf2" + struct.pack("<HIHHHHBiqq", 0xFFFF, 10**6, 0, 0, 0, 0, 0, 0, 0, 0),
        b"\xf4\x00\x00\xf2" + struct.pack("<HIHHHHBiqq", 0xFFFF, 1, 7, 0, 0, 0, 0, 0, 0, 0) + b"x",
        b"\xf4\x01\x00\x02\x00\xff\xfe",  # a symbol that is not UTF-8
    ],
)
def test_hostile_event_blobs_raise_a_bounded_error(blob: bytes) -> None:
    """A blob claiming more than it holds, or naming what does not exist, is refused."""
    with pytest.raises((ValueError, IndexError, struct.error)):
        unpack_events(blob, Symbols())


def _summary(**changes: object) -> Summary:
    base = Summary("S", SagaState.COMPLETED, SagaStatus.COMPLETED, 0, 1, 2, None, 0)
    return base._replace(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"", "without a key"),
        (b"x" * 2000, b"", "too long"),
        (b"\xff", encode_saga("c", _summary(), [])[1], "not UTF-8"),
        (b"c", b"\x01\x00", "cut short"),
        (b"c", b"\x09" + encode_saga("c", _summary(), [])[1][1:], "version 9"),
        (b"c", encode_saga("c", _summary(), [])[1][:1] + b"\x63" + b"\x00" * 40, "unknown state"),
        (b"c", encode_saga("c", _summary(saga="s" * 40), [])[1][:40], "cut short"),
    ],
)
def test_hostile_saga_records_are_refused(key: bytes | None, value: bytes, reason: str) -> None:
    """A saga record with a missing, oversized, truncated or unknown part is refused."""
    with pytest.raises(SummaryError, match=reason):
        decode_saga(key, value)


@pytest.mark.parametrize(
    "value",
    [
        b"[1]",
        b"{not json",
        json.dumps({"records": -1}).encode(),
        json.dumps({"records": 2**60}).encode(),
        json.dumps({"records": 1.5}).encode(),
        json.dumps({"records": True}).encode(),
        json.dumps({f"c{n}": 1 for n in range(MAX_STATS_ENTRIES + 1)}).encode(),
        b" " * 70_000,
    ],
)
def test_hostile_stats_records_are_refused(value: bytes) -> None:
    """A stats record that is not a bounded object of bounded whole numbers is refused."""
    with pytest.raises(SummaryError):
        decode_stats(value)


def test_hostile_records_are_counted_not_fatal() -> None:
    """Unreadable summary records are counted; a saga whose events are garbage still lists."""
    key, value = encode_saga("good", _summary(), [])
    garbage_events = encode_saga("bad-events", _summary(), [])[1] + b"\xf4\x05"
    records = [
        _saga_record(b"\xff\xfe", value, 0),
        _saga_record(key, value[:5], 1),
        _saga_record(key, value, 2),
        _saga_record(b"bad-events", garbage_events, 3),
        Record("sums", 0, 4, b"k", b"[]", ((KIND_HEADER, b"stats"),)),
        Record("sums", 0, 5, b"k", b"x", ((KIND_HEADER, b"saga"), (KIND_HEADER, b"saga"))),
    ]
    reader = Tracker()
    assert reader.load_summaries(records) == 2
    assert reader.stats.reasons == {"unreadable summary": 3}
    assert reader.total() == 2
    trace = reader.get("bad-events")
    assert trace is not None and trace.events == []


def test_stats_records_sum_over_partitions() -> None:
    """The reader's counters are the sum of each partition's latest stats record."""
    reader = Tracker()
    kind = ((KIND_HEADER, b"stats"),)
    reader.load_summaries([
        Record("sums", 0, 0, b"k0", encode_stats({"records": 5, "events": 4}), kind),
        Record("sums", 1, 0, b"k1", encode_stats({"records": 7, "events": 7}), kind),
        Record("sums", 0, 1, b"k0", encode_stats({"records": 6, "events": 5}), kind),
    ])
    assert (reader.stats.records, reader.stats.events) == (13, 12)


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_control_keys_land_in_their_partition(partitions: int) -> None:
    """Each partition's stats and marker keys hash to it and can never be a correlation id."""
    for number in range(partitions):
        for kind in (b"stats", b"marker"):
            key = control_key(kind, number, partitions)
            assert partition_for(key, partitions) == number
            with pytest.raises(UnicodeDecodeError):
                key.decode("utf-8")


def _decoded(records: list[tuple[bytes, bytes]]) -> dict[str, Summary]:
    return {cid: summary for cid, summary, _ in (decode_saga(k, v) for k, v in records)}


def test_a_running_saga_is_written_once_it_ends_or_at_the_next_call() -> None:
    """take_settled holds a running saga back once (returning the offsets its events are
    at), writes an ended one at once, and never holds a saga back twice in a row."""
    tracker = Tracker()
    tracker.track_changes()
    log, idle = SagaLog(), SagaLog()
    start = log.start()
    idle.start()
    first = to_records(log.envelopes + idle.envelopes)
    tracker.feed_many(first)
    cids, records, held = tracker.take_settled({})
    assert cids == [] and records == []
    assert held == {TopicPartition("trk.OrderCreated", 0): first[0].offset}
    reserved = log.emit(start, "trk.InventoryReserved", Role.STEP, "inventory", "inv")
    log.emit(reserved, "trk.OrderCompleted", Role.COMPLETED, "order")
    tracker.feed_many(to_records(log.envelopes[1:]))
    cids, records, held = tracker.take_settled({})
    # the saga that ended is written once, finished; the idle one after one hold-back
    assert sorted(cids) == sorted([log.cid, idle.cid])
    summaries = _decoded(records)
    assert summaries[log.cid].state is SagaState.COMPLETED
    assert summaries[idle.cid].state is SagaState.STARTED
    assert held == {}
    assert tracker.take_settled({}) == ([], [], {})


def test_held_back_offsets_start_at_the_committed_floor() -> None:
    """Events below the offsets already committed are in the summary topic: only the
    held saga's newer events bound the next commit."""
    tracker = Tracker()
    tracker.track_changes()
    log = SagaLog()
    start = log.start()
    created = to_records(log.envelopes)
    tracker.feed_many(created)
    tracker.take_summaries()  # written (a revocation's commit, say)
    log.emit(start, "trk.InventoryReserved", Role.STEP, "inventory", "inv")
    reserved = to_records(log.envelopes[1:])
    tracker.feed_many(reserved)
    floor = {TopicPartition("trk.OrderCreated", 0): created[0].offset + 1}
    _, records, held = tracker.take_settled(floor)
    assert records == []
    assert held == {TopicPartition("trk.InventoryReserved", 0): reserved[0].offset}


def test_retaken_sagas_are_not_held_back_twice() -> None:
    tracker = Tracker()
    tracker.track_changes()
    log = SagaLog()
    log.start()
    tracker.feed_many(to_records(log.envelopes))
    assert tracker.take_settled({})[0] == []
    cids, _, _ = tracker.take_settled({})
    assert cids == [log.cid]
    tracker.retake(cids)  # the commit failed
    cids, records, held = tracker.take_settled({})
    assert cids == [] and records == [] and held  # held once again, as a fresh change
    assert tracker.take_settled({})[0] == [log.cid]


def test_sagas_fed_without_settling_are_folded_once_at_settle() -> None:
    """feed_many(settle=False) leaves the summaries of the sagas it fed for settle() (their
    traces are right all along), however many calls fed them."""
    tracker = Tracker()
    running, ended = SagaLog(), SagaLog().completed()
    start = running.start()
    tracker.feed_many(to_records(running.envelopes + ended.envelopes), settle=False)
    assert tracker.counts()[SagaStatus.COMPLETED] == 0
    done = tracker.get(ended.cid)
    assert done is not None and done.state is SagaState.COMPLETED
    running.emit(start, "trk.InventoryReserved", Role.STEP, "inventory", "inv")
    tracker.feed_many(to_records(running.envelopes[1:]), settle=False)
    trace = tracker.get(running.cid)
    assert trace is not None and len(trace.events) == 2
    assert tracker.counts()[SagaStatus.PENDING] == 0  # its summary waits for settle
    tracker.settle()
    assert tracker.counts()[SagaStatus.PENDING] == 1
    assert tracker.counts()[SagaStatus.COMPLETED] == 1
    assert tracker.counts()[SagaStatus.STARTED] == 0
    assert tracker.sagas(status=SagaStatus.PENDING)[0].correlation_id == running.cid
