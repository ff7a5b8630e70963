"""The Tracker: feeding, deduplication, compaction, eviction, queries and deadlines."""

from __future__ import annotations

import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from tracker_log import SAGA, T0, SagaLog, build_choreography, to_records

from choreo.model.envelope import Header, Role
from choreo.tracker import SagaState, SagaStatus, Tracker, fold
from choreo.tracker.fold import Code
from choreo.transports.base import Record


def mixed_logs(count: int, seed: int = 1) -> list[SagaLog]:
    """Return ``count`` sagas: completed, declined and still running, at increasing times."""
    rng = random.Random(seed)
    logs = []
    for index in range(count):
        log = SagaLog(cid=f"cid-{index:04d}", start_ms=T0 + index * 1_000)
        kind = rng.random()
        if kind < 0.6:
            log.completed()
        elif kind < 0.85:
            log.declined()
        else:
            s = log.start()
            log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
        logs.append(log)
    return logs


def all_records(logs: list[SagaLog]) -> list[Record]:
    """Return every saga's records, one list."""
    return [record for log in logs for record in to_records(log.envelopes)]


def test_feed_returns_the_new_trace() -> None:
    """feed() folds one record and returns the saga's trace."""
    tracker = Tracker()
    log = SagaLog().completed()
    traces = [tracker.feed(record) for record in to_records(log.envelopes)]
    assert [t.state for t in traces if t is not None] == [
        SagaState.STARTED, SagaState.PENDING, SagaState.PENDING, SagaState.PENDING,
        SagaState.COMPLETED,
    ]
    assert tracker.get(log.cid) == traces[-1]
    assert tracker.total() == 1
    assert tracker.saga_types() == [SAGA]


def test_duplicates_and_foreign_records_change_nothing() -> None:
    """A record read twice, or one without choreo headers, leaves the trace as it was."""
    tracker = Tracker()
    records = to_records(SagaLog().completed().envelopes)
    tracker.feed_many(records)
    version = tracker.version
    assert tracker.feed(records[1]) is None
    assert tracker.feed(Record("other", 0, 0, b"k", b"v", (("x", b"y"),))) is None
    assert tracker.version == version
    assert tracker.stats.duplicates == 1
    assert tracker.stats.ignored == 1
    assert tracker.stats.events == len(records)


def test_broken_headers_are_counted_not_raised() -> None:
    """A record with an unknown role or a non-integer time is counted invalid."""
    tracker = Tracker()
    good = to_records(SagaLog().completed().envelopes)[0]
    bad_role = tuple((k, b"sideways" if k == Header.ROLE else v) for k, v in good.headers)
    bad_time = tuple((k, b"soon" if k == Header.PRODUCED_AT else v) for k, v in good.headers)
    tracker.feed(Record("t", 0, 1, None, None, bad_role))
    tracker.feed(Record("t", 0, 2, None, None, bad_time))
    assert tracker.stats.invalid == 2
    assert tracker.total() == 0


def test_feed_many_equals_fold_of_the_set_in_any_order() -> None:
    """Feeding all records in any order gives each saga the pure fold of its events."""
    logs = mixed_logs(40)
    records = all_records(logs)
    shuffled = list(records)
    random.Random(5).shuffle(shuffled)
    tracker = Tracker(keep_finished=5, max_open=3)  # force compaction and eviction
    assert tracker.feed_many(shuffled) == len(records)
    ordered = Tracker(keep_finished=10_000)
    ordered.feed_many(records)
    for log in logs:
        assert tracker.get(log.cid) == ordered.get(log.cid)
    counts = tracker.counts()
    assert set(counts) == set(SagaStatus)
    assert sum(counts.values()) == len(logs)
    assert counts == ordered.counts()


def test_compaction_is_lossless() -> None:
    """A compacted finished saga unpacks to exactly the trace it had."""
    tracker = Tracker(keep_finished=0)
    log = SagaLog().declined()
    records = to_records(log.envelopes)
    tracker.feed_many(records)
    assert tracker.kept_as(log.cid) == "packed"
    trace = tracker.get(log.cid)
    full = Tracker(keep_finished=9)
    full.feed_many(records)
    assert full.kept_as(log.cid) == "full"
    assert trace is not None
    assert trace == full.get(log.cid)
    assert trace == fold(log.cid, full.get(log.cid).events, saga=SAGA)  # type: ignore[union-attr]


def test_late_event_reinflates_a_compacted_saga() -> None:
    """A notice arriving after compaction is folded in with the rest of the saga."""
    tracker = Tracker(keep_finished=0)
    log = SagaLog().completed()
    tracker.feed_many(to_records(log.envelopes))
    notice = log.emit(log.envelopes[-1], "trk.NotificationSent", Role.NOTICE, "notification")
    trace = tracker.feed(to_records([notice])[0])
    assert trace is not None
    assert trace.events[-1].event_id == notice.event_id
    assert trace.state is SagaState.COMPLETED
    assert tracker.get(log.cid) == trace


def test_open_sagas_are_capped() -> None:
    """Beyond max_open the least recently active running saga is compacted, not lost."""
    tracker = Tracker(max_open=2)
    logs = []
    for index in range(5):
        log = SagaLog(cid=f"open-{index}", start_ms=T0 + index)
        log.start()
        logs.append(log)
        tracker.feed_many(to_records(log.envelopes))
    assert [tracker.kept_as(log.cid) for log in logs] == ["packed"] * 3 + ["full"] * 2
    assert tracker.total() == 5
    first = logs[0]
    step = first.emit(first.envelopes[0], "trk.InventoryReserved", Role.STEP, "inventory")
    trace = tracker.feed(to_records([step])[0])
    assert trace is not None and trace.state is SagaState.PENDING
    assert len(trace.events) == 2
    assert tracker.kept_as(first.cid) == "full"
    assert tracker.kept_as("unknown") is None


def test_sagas_filters_and_newest_first() -> None:
    """sagas() filters by status, saga, time, search, and pages newest first."""
    logs = mixed_logs(30)
    tracker = Tracker()
    tracker.feed_many(all_records(logs))
    everything = tracker.sagas(limit=1000)
    starts = [t.started_at_ms for t in everything]
    assert starts == sorted(starts, reverse=True)
    assert len(everything) == 30
    completed = tracker.sagas(status=SagaStatus.COMPLETED, limit=1000)
    assert {t.correlation_id for t in completed} == {
        log.cid for log in logs if log.envelopes[-1].role is Role.COMPLETED
    }
    window = tracker.sagas(since_ms=T0 + 10_000, until_ms=T0 + 19_999, limit=1000)
    assert {t.correlation_id for t in window} == {f"cid-{i:04d}" for i in range(10, 20)}
    assert [t.correlation_id for t in tracker.sagas(search="CID-0007")] == ["cid-0007"]
    page = tracker.sagas(limit=5, offset=5)
    assert page == everything[5:10]
    assert tracker.sagas(saga="Other") == []


def test_deadlines_mark_stuck_and_a_new_event_clears_it() -> None:
    """check_deadlines marks an overdue running saga stuck once; its next event clears it."""
    clock = [T0 / 1000]
    tracker = Tracker(default_deadline_s=1.0, clock=lambda: clock[0])
    log = SagaLog()
    s = log.start()
    done = SagaLog().completed()
    tracker.feed_many(to_records(log.envelopes + done.envelopes))
    clock[0] = (s.produced_at_ms + 1_001) / 1000
    newly = tracker.check_deadlines()
    assert [t.correlation_id for t in newly] == [log.cid]
    assert tracker.check_deadlines() == []
    assert tracker.get(log.cid).status is SagaStatus.STUCK  # type: ignore[union-attr]
    assert tracker.counts()[SagaStatus.STUCK] == 1
    assert [t.correlation_id for t in tracker.sagas(stuck_only=True)] == [log.cid]
    step = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    trace = tracker.feed(to_records([step])[0])
    assert trace is not None and not trace.stuck
    assert trace.status is SagaStatus.PENDING
    assert tracker.counts()[SagaStatus.STUCK] == 0


def test_stuck_survives_a_notice() -> None:
    """A notice does not move the deadline, so a stuck saga stays stuck."""
    tracker = Tracker(default_deadline_s=1.0)
    log = SagaLog()
    s = log.start()
    tracker.feed_many(to_records(log.envelopes))
    assert len(tracker.check_deadlines(now_ms=s.produced_at_ms + 5_000)) == 1
    notice = log.emit(s, "trk.Audit", Role.NOTICE, "audit")
    trace = tracker.feed(to_records([notice])[0])
    assert trace is not None and trace.stuck


def test_dead_letter_needing_a_human_marks_compensation_failed() -> None:
    """A dead-letter record with choreo-needs-human marks its saga CompensationFailed."""
    tracker = Tracker()
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    d = log.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    tracker.feed_many(to_records(log.envelopes))
    dead = to_records([d])[0]
    headers = (*dead.headers, (Header.DLQ_REASON, b"retries exhausted"),
               (Header.NEEDS_HUMAN, b"true"))
    trace = tracker.feed(Record("choreo.deadletter.inventory", 0, 0, dead.key, None, headers))
    assert trace is not None and trace.compensation_failed
    assert trace.status is SagaStatus.COMPENSATION_FAILED
    assert tracker.stats.dead_letters == 1
    plain = (*dead.headers, (Header.DLQ_REASON, b"poison"))
    assert tracker.feed(Record("choreo.deadletter.payment", 0, 1, None, None, plain)) is None
    assert tracker.stats.dead_letters == 2
    assert len(tracker.get(log.cid).events) == 3  # type: ignore[union-attr]


def test_violations_show_as_violated() -> None:
    """A saga breaking the guarantee has status Violated and is counted so."""
    log = SagaLog().completed()
    log.emit(log.envelopes[-1], "trk.OrderFailed", Role.FAILED, "order", "order.start")
    tracker = Tracker()
    tracker.feed_many(to_records(log.envelopes))
    trace = tracker.get(log.cid)
    assert trace is not None
    assert [v.code for v in trace.violations] == [Code.DOUBLE_TERMINAL]
    assert tracker.counts()[SagaStatus.VIOLATED] == 1


def test_choreography_gives_compensation_missing() -> None:
    """With the choreography the tracker reports a failed saga's missing compensation."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    d = log.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    log.emit(d, "trk.OrderFailed", Role.FAILED, "order", "order.start")
    tracker = Tracker(choreography=build_choreography())
    tracker.feed_many(to_records(log.envelopes))
    assert tracker.choreography is not None
    assert [v.code for v in tracker.get(log.cid).violations] == [  # type: ignore[union-attr]
        Code.COMPENSATION_MISSING
    ]


def test_payload_is_decoded_on_demand_and_bounded() -> None:
    """payload() decodes kept bytes with the decode callable; old payloads are dropped."""
    tracker = Tracker(decode=lambda raw: {"raw": raw.decode()}, max_payloads=2)
    log = SagaLog().completed()
    tracker.feed_many(to_records(log.envelopes, value=b"hello"))
    first, last = log.envelopes[0], log.envelopes[-1]
    assert tracker.payload(log.cid, last.event_id) == {"raw": "hello"}
    assert tracker.payload(log.cid, first.event_id) is None
    assert Tracker().payload(log.cid, last.event_id) is None


def test_wait_for_change_wakes_on_feed() -> None:
    """wait_for_change blocks until a feed changes the version."""
    tracker = Tracker()
    start = tracker.version
    seen: list[int] = []
    waiter = threading.Thread(target=lambda: seen.append(tracker.wait_for_change(start, 5.0)))
    waiter.start()
    tracker.feed_many(to_records(SagaLog().completed().envelopes))
    waiter.join(5.0)
    assert seen and seen[0] > start
    assert tracker.wait_for_change(tracker.version, 0.01) == tracker.version


def test_offsets_are_next_to_read() -> None:
    """offsets() holds the next offset to read per topic-partition."""
    tracker = Tracker()
    records = to_records(SagaLog().completed().envelopes)
    tracker.feed_many(records)
    offsets = tracker.offsets()
    for record in records:
        assert offsets[record.topic_partition] == record.offset + 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), keep=st.integers(0, 4), cap=st.integers(1, 4))
def test_any_order_any_bounds_same_answers(seed: int, keep: int, cap: int) -> None:
    """Whatever the order, duplicates and memory bounds, every saga's trace is the same."""
    rng = random.Random(seed)
    logs = mixed_logs(8, seed=seed)
    records = all_records(logs)
    shuffled = records + rng.sample(records, k=len(records) // 3)
    rng.shuffle(shuffled)
    reference = Tracker()
    reference.feed_many(records)
    tracker = Tracker(keep_finished=keep, max_open=cap)
    for index in range(0, len(shuffled), 7):
        tracker.feed_many(shuffled[index : index + 7])
    for log in logs:
        assert tracker.get(log.cid) == reference.get(log.cid)
    assert tracker.counts() == reference.counts()
