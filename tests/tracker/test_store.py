"""The SQLite checkpoint: a restarted tracker resumes sagas and offsets without rereading."""

from __future__ import annotations

from pathlib import Path

from tracker_log import T0, SagaLog, to_records

from choreo.model.envelope import Role
from choreo.tracker import CheckpointStore, SagaState, SagaStatus, Tracker


def test_restart_resumes_sagas_and_skips_what_was_read(tmp_path: Path) -> None:
    """After a checkpoint a new tracker knows every saga and skips records already folded."""
    path = tmp_path / "tracker.sqlite"
    done = SagaLog(start_ms=T0).completed()
    running = SagaLog(start_ms=T0 + 1_000)
    s = running.start()
    records = to_records(done.envelopes + running.envelopes)
    with CheckpointStore(path) as store:
        first = Tracker(checkpoint=store, keep_finished=0)
        first.feed_many(records)
        assert first.kept_as(done.cid) == "packed"
        assert first.checkpoint() == 2
        assert first.kept_as(done.cid) == "stored"
        assert first.kept_as(running.cid) == "full"
        before = {cid: first.get(cid) for cid in (done.cid, running.cid)}
        first_counts = first.counts()
    with CheckpointStore(path) as store:
        second = Tracker(checkpoint=store)
        assert second.total() == 2
        assert second.counts() == first_counts
        assert second.get(done.cid) == before[done.cid]
        assert second.get(running.cid) == before[running.cid]
        assert second.offsets() == first.offsets()
        second.feed_many(records)  # a consumer re-delivering from the start
        assert second.stats.skipped == len(records)
        step = running.emit(s, "trk.InventoryReserved", Role.STEP, "inventory")
        trace = second.feed(to_records([step])[0])
        assert trace is not None and trace.state is SagaState.PENDING
        assert len(trace.events) == 2
        assert second.counts()[SagaStatus.PENDING] == 1


def test_checkpoint_writes_only_changes(tmp_path: Path) -> None:
    """A second checkpoint with nothing new writes no saga; a changed saga is written again."""
    with CheckpointStore(tmp_path / "t.sqlite") as store:
        tracker = Tracker(checkpoint=store)
        log = SagaLog().completed()
        tracker.feed_many(to_records(log.envelopes))
        assert tracker.checkpoint() == 1
        assert tracker.checkpoint() == 0
        tracker.check_deadlines(now_ms=T0)  # nothing overdue
        assert tracker.checkpoint() == 0
        notice = log.emit(log.envelopes[-1], "trk.Notified", Role.NOTICE, "notification")
        tracker.feed(to_records([notice])[0])
        assert tracker.checkpoint() == 1
        assert store.saga_count() == 1
        assert store.counters()["events"] == 6


def test_saved_compacted_sagas_leave_memory(tmp_path: Path) -> None:
    """With a store, a compacted saga's packed events live in the store after a checkpoint."""
    with CheckpointStore(tmp_path / "t.sqlite") as store:
        tracker = Tracker(checkpoint=store, keep_finished=0)
        log = SagaLog().declined()
        tracker.feed_many(to_records(log.envelopes))
        expected = tracker.get(log.cid)
        tracker.checkpoint()
        assert tracker.kept_as(log.cid) == "stored"
        assert tracker.get(log.cid) == expected
        assert store.events(log.cid) is not None
        assert store.events("unknown") is None


def test_stuck_and_compensation_failed_survive_a_restart(tmp_path: Path) -> None:
    """Flags saved in the checkpoint come back after a restart."""
    path = tmp_path / "t.sqlite"
    log = SagaLog()
    s = log.start()
    with CheckpointStore(path) as store:
        tracker = Tracker(checkpoint=store, default_deadline_s=1.0)
        tracker.feed_many(to_records(log.envelopes))
        tracker.check_deadlines(now_ms=s.produced_at_ms + 10_000)
        tracker.checkpoint()
    with CheckpointStore(path) as store:
        again = Tracker(checkpoint=store, default_deadline_s=1.0)
        assert again.counts()[SagaStatus.STUCK] == 1
        trace = again.get(log.cid)
        assert trace is not None and trace.stuck
