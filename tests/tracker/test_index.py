"""The saga index: indexed answers equal a brute-force filter and sort over the same traces."""

from __future__ import annotations

import random
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from tracker_log import T0, SagaLog, to_records

from choreo.model.envelope import Header, Role
from choreo.tracker import SagaQuery, SagaState, SagaStatus, SagaTrace, Tracker
from choreo.tracker.index import SortedKeys
from choreo.tracker.store import CheckpointStore
from choreo.transports.base import Record

FORWARD = (SagaState.STARTED, SagaState.PENDING)


def start_key(trace: SagaTrace) -> tuple[int, str]:
    """Return the order key of a saga in a listing (start time, -1 when unknown; then id)."""
    started = trace.started_at_ms
    return (-1 if started is None else started, trace.correlation_id)


def brute_force(traces: list[SagaTrace], query: SagaQuery) -> list[SagaTrace]:
    """Return every trace matching ``query``, newest first, by filtering and sorting them all."""
    needle = query.search.lower() if query.search else None
    found = [
        trace
        for trace in traces
        if (query.status is None or trace.status is query.status)
        and (query.saga is None or trace.saga == query.saga)
        and (not query.stuck_only or trace.stuck)
        and (query.since_ms is None or start_key(trace)[0] >= query.since_ms)
        and (query.until_ms is None or start_key(trace)[0] <= query.until_ms)
        and (needle is None or needle in trace.correlation_id.lower())
    ]
    return sorted(found, key=start_key, reverse=True)


def needs_human(log: SagaLog) -> Record:
    """Return a dead-letter record of ``log``'s first event that asks for a human."""
    first = to_records(log.envelopes[:1])[0]
    headers = (*first.headers, (Header.DLQ_REASON, b"budget"), (Header.NEEDS_HUMAN, b"true"))
    return Record("choreo.deadletter.x", 0, first.offset, first.key, None, headers)


def random_logs(rng: random.Random, count: int) -> tuple[list[SagaLog], list[Record]]:
    """Return sagas of several kinds and types, and all their records (some twice)."""
    logs: list[SagaLog] = []
    extra: list[Record] = []
    for index in range(count):
        saga = rng.choice(["OrderFulfillment", "Refund"])
        log = SagaLog(cid=f"c{index:03d}-{rng.randrange(16**4):04x}", saga=saga,
                      start_ms=T0 + rng.randrange(0, 40) * 500)
        kind = rng.randrange(7)
        if kind == 0:
            log.completed()
        elif kind == 1:
            log.declined()
        elif kind == 2:
            log.start()
        elif kind == 3:
            s = log.start()
            log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
        elif kind == 4:  # violated: a second terminal event
            log.completed()
            log.emit(log.envelopes[-1], "trk.OrderFailed", Role.FAILED, "order", "order.start")
        elif kind == 5:  # compensating, and a dead letter asks for a human
            s = log.start()
            log.emit(s, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
            extra.append(needs_human(log))
        else:  # an event with an unknown cause, produced before the start: it moves the start
            log.completed()
            log.emit(None, "trk.Audit", Role.NOTICE, "audit",
                     at=log.envelopes[0].produced_at_ms - rng.randrange(1, 5_000))
        logs.append(log)
    records = [record for log in logs for record in to_records(log.envelopes)] + extra
    records += rng.sample(records, k=len(records) // 5)  # duplicates
    rng.shuffle(records)
    return logs, records


def random_query(rng: random.Random, cids: list[str]) -> SagaQuery:
    """Return a query with a random mix of filters."""
    since = T0 + rng.randrange(-10_000, 25_000) if rng.random() < 0.3 else None
    until = T0 + rng.randrange(-10_000, 25_000) if rng.random() < 0.3 else None
    search = None
    if cids and rng.random() < 0.2:
        cid = rng.choice(cids)
        start = rng.randrange(len(cid))
        search = cid[start : start + rng.randrange(1, 5)].upper()
    return SagaQuery(
        status=rng.choice([None, None, *SagaStatus]),
        saga=rng.choice([None, None, "OrderFulfillment", "Refund", "Other"]),
        since_ms=since,
        until_ms=until,
        stuck_only=rng.random() < 0.2,
        search=search,
    )


def assert_index_agrees(tracker: Tracker, cids: list[str], rng: random.Random) -> None:
    """Check find(), count() and timeout_candidates() against brute force over every trace."""
    traces = [trace for trace in map(tracker.get, cids) if trace is not None]
    assert tracker.find(limit=10_000) == brute_force(traces, SagaQuery())
    for _ in range(12):
        query = random_query(rng, cids)
        expected = brute_force(traces, query)
        limit, offset = rng.randrange(1, 8), rng.randrange(0, 6)
        assert tracker.find(query, limit=limit, offset=offset) == expected[offset : offset + limit]
        assert tracker.count(query) == (None if query.search else len(expected))
    now = T0 + rng.randrange(0, 60_000)
    due = sorted(
        (trace.deadline_ms, trace.correlation_id)
        for trace in traces
        if trace.state in FORWARD and not trace.timed_out
        and trace.deadline_ms is not None and trace.deadline_ms < now
    )
    assert tracker.timeout_candidates(now) == [cid for _, cid in due]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    keep=st.integers(0, 3),
    cap=st.integers(1, 4),
    rebuild_base=st.sampled_from([0, 2, 10_000]),
)
def test_indexed_answers_equal_brute_force(
    seed: int, keep: int, cap: int, rebuild_base: int
) -> None:
    """For random feeds, deadlines and filters, the index answers like a full scan would."""
    rng = random.Random(seed)
    logs, records = random_logs(rng, 24)
    cids = [log.cid for log in logs]
    with mock.patch("choreo.tracker.index._REBUILD_BASE", rebuild_base):
        tracker = Tracker(keep_finished=keep, max_open=cap, default_deadline_s=2.0)
        at = 0
        while at < len(records):
            size = rng.choice([1, 3, 10, 40])
            tracker.feed_many(records[at : at + size])
            at += size
            if rng.random() < 0.4:
                before = {cid: tracker.get(cid) for cid in cids}
                now = T0 + rng.randrange(0, 40_000)
                newly = {trace.correlation_id for trace in tracker.check_deadlines(now)}
                assert newly == {
                    cid for cid, trace in before.items()
                    if trace is not None and not trace.stuck
                    and trace.state not in (SagaState.COMPLETED, SagaState.FAILED)
                    and trace.deadline_ms is not None and trace.deadline_ms < now
                }
            if rng.random() < 0.5:
                assert_index_agrees(tracker, cids, rng)
        assert_index_agrees(tracker, cids, rng)


def test_a_late_earlier_event_moves_a_saga_in_the_listing() -> None:
    """An event produced before a saga's start, read last, re-files the saga by its new start."""
    early, late = SagaLog(cid="early", start_ms=T0), SagaLog(cid="late", start_ms=T0 + 5_000)
    early.completed()
    late.completed()
    tracker = Tracker(keep_finished=0)
    tracker.feed_many(to_records(early.envelopes + late.envelopes))
    assert [t.correlation_id for t in tracker.sagas()] == ["late", "early"]
    audit = late.emit(None, "trk.Audit", Role.NOTICE, "audit", at=T0 - 1_000)
    tracker.feed_many(to_records([audit]))
    assert [t.correlation_id for t in tracker.sagas()] == ["early", "late"]
    assert tracker.sagas(until_ms=T0 - 1)[0].correlation_id == "late"
    assert tracker.count(SagaQuery(since_ms=T0)) == 1


def test_a_reloaded_tracker_answers_from_its_checkpoint() -> None:
    """A tracker resumed from a checkpoint lists, counts and filters like the one that saved it."""
    rng = random.Random(3)
    logs, records = random_logs(rng, 30)
    with CheckpointStore() as store:
        first = Tracker(checkpoint=store, keep_finished=2, default_deadline_s=2.0)
        first.feed_many(records)
        first.check_deadlines(T0 + 30_000)
        first.checkpoint()
        second = Tracker(checkpoint=store, default_deadline_s=2.0)
        for status in SagaStatus:
            query = SagaQuery(status=status)
            assert second.find(query, limit=100) == first.find(query, limit=100)
            assert second.count(query) == first.count(query)
        assert_index_agrees(second, [log.cid for log in logs], rng)


def test_sorted_keys_match_a_sorted_list() -> None:
    """SortedKeys adds, discards, ranks and walks ranges like a plain sorted list."""
    rng = random.Random(11)
    keys = SortedKeys()
    reference: set[tuple[int, str]] = set()
    with mock.patch("choreo.tracker.index._LOAD", 4):  # many small blocks
        for _ in range(3_000):
            key = (rng.randrange(50), rng.choice("abcdef"))
            if rng.random() < 0.6:
                if key not in reference:
                    keys.add(key)
                    reference.add(key)
            else:
                keys.discard(key)
                reference.discard(key)
            ordered = sorted(reference)
            assert len(keys) == len(ordered)
            low, high = (rng.randrange(-5, 55), ""), (rng.randrange(-5, 55), "c")
            inside = [k for k in ordered if low <= k < high]
            skip = rng.randrange(0, 4)
            assert list(keys.descending(low, high, skip)) == inside[::-1][skip:]
            assert list(keys.descending(None, None)) == ordered[::-1]
            assert keys.rank(high) == sum(k < high for k in ordered)
            assert list(keys.below(high)) == [k for k in ordered if k < high]
    assert list(keys) == sorted(reference)
