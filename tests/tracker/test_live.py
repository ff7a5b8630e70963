"""The live tracker and the one-shot reader, on the memory transport."""

from __future__ import annotations

import time
from pathlib import Path

from tracker_log import SagaLog

from choreo.tracker import CheckpointStore, SagaState, Tracker
from choreo.tracker.live import LiveTracker, read_topics
from choreo.transports.memory import MemoryBus, MemoryTransport


def publish(transport: MemoryTransport, log: SagaLog) -> None:
    """Publish a saga's events on topics named by their types."""
    producer = transport.producer()
    for env in log.envelopes:
        producer.publish(env.event_type, b"v", key=env.correlation_id.encode(),
                         headers=env.to_headers())
    producer.flush()


def wait_until(condition: object, timeout: float = 60.0) -> bool:
    """Poll ``condition()`` until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_live_tracker_follows_the_topics() -> None:
    """Events published before and after start are all folded."""
    transport = MemoryTransport(MemoryBus())
    before = SagaLog().completed()
    publish(transport, before)
    tracker = Tracker()
    live = LiveTracker(tracker, transport, poll_timeout=0.05).start()
    try:
        assert live.wait_assigned(5.0)
        after = SagaLog().declined()
        publish(transport, after)
        assert wait_until(lambda: tracker.total() == 2 and tracker.get(after.cid) is not None
                          and tracker.get(after.cid).state is SagaState.FAILED)
        assert tracker.get(before.cid).state is SagaState.COMPLETED  # type: ignore[union-attr]
    finally:
        live.stop()
    assert not live.running
    assert live.error is None


def test_live_tracker_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """A second live tracker on the same checkpoint does not fold old records again."""
    transport = MemoryTransport(MemoryBus())
    publish(transport, SagaLog().completed())
    with CheckpointStore(tmp_path / "c.sqlite") as store:
        tracker = Tracker(checkpoint=store)
        live = LiveTracker(tracker, transport, poll_timeout=0.05).start()
        assert wait_until(lambda: tracker.stats.events == 5)
        live.stop()
    publish(transport, SagaLog().completed())
    with CheckpointStore(tmp_path / "c.sqlite") as store:
        again = Tracker(checkpoint=store)
        live = LiveTracker(again, transport, poll_timeout=0.05).start()
        assert wait_until(lambda: again.total() == 2 and again.stats.events == 10)
        live.stop()
        assert again.stats.duplicates == 0


def test_read_topics_stops_when_idle() -> None:
    """read_topics yields what the topics hold and returns once idle."""
    transport = MemoryTransport(MemoryBus())
    log = SagaLog().completed()
    publish(transport, log)
    topics = sorted({env.event_type for env in log.envelopes})
    records = list(read_topics(transport, topics, idle_timeout=0.2))
    assert sorted(r.offset for r in records) == [0] * len(topics)
    assert {r.topic for r in records} == set(topics)
    assert list(read_topics(transport, [], idle_timeout=0.1)) == []
