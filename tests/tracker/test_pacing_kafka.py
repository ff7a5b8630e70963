"""A tracker instance reads a skewed log in record-time order on a real broker.

The log is what makes a rebuild slow without alignment: a dense topic (one small record
per millisecond) beside a sparse one (one four-times-larger record per 20 ms) over the
same 30 seconds. The client fetches both at about the same byte rate, so unaligned the
sparse topic is read about four times faster in record time than the dense one; aligned,
only what the client fetched before the first pause runs ahead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import confluent_kafka as ck
import pytest

from choreo.tracker import Tracker
from choreo.tracker.group import TrackerGroupMember
from choreo.transports.base import Record
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000_000
DENSE = 30_000  # one per ms: 30 s of record time, about 5 MB
SPARSE = 1_500  # one per 20 ms over the same 30 s, about 1.5 MB
WINDOW_MS = 1_000
PREFETCH_KB = 512  # what the client fetches ahead (it is never paused)


class Recording(Tracker):
    """A real tracker that also notes, per batch it is fed, each record's topic and time."""

    def __init__(self, seen: list[list[tuple[str, int]]]) -> None:
        super().__init__()
        self.seen = seen

    def feed_many(self, records: Iterable[Record], *, settle: bool = True) -> int:
        batch = list(records)
        self.seen.append([(record.topic, record.timestamp_ms) for record in batch])
        return super().feed_many(batch, settle=settle)


def _produce(bootstrap: str, dense: str, sparse: str) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                            "batch.size": 1_000_000})
    small, large = bytes(150), bytes(1_000)
    for n in range(DENSE):
        producer.produce(dense, small, b"k", timestamp=T0 + n)
        if n % 20 == 0:
            producer.produce(sparse, large, b"k", timestamp=T0 + n)
        if n % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def _leads(batches: list[list[tuple[str, int]]], sparse: str) -> list[int]:
    """Return, per sparse record, how far (ms) it was ahead of the dense topic when its
    batch was folded (a tracker folds a batch at once: order inside it does not matter)."""
    dense_at = T0
    leads: list[int] = []
    for batch in batches:
        dense_at = max([dense_at, *(at for topic, at in batch if topic != sparse)])
        leads.extend(at - dense_at for topic, at in batch if topic == sparse)
    return leads


def _count(batches: list[list[tuple[str, int]]]) -> int:
    return sum(len(batch) for batch in batches)


def _recording(seen: list[list[tuple[str, int]]]) -> Callable[[], Tracker]:
    return lambda: Recording(seen)


def test_partitions_ahead_in_record_time_wait_for_the_others(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Two members of two groups read the same skewed log at the same time, one aligned
    and one not: when the aligned one folds a sparse record, the dense topic is (for 90 %
    of them) within two windows of it; the other folds most sparse records far ahead;
    both fold every record once.
    (About 10 s: the log must be many times what the client fetches ahead.)"""
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap,
                         consumer={"queued.max.messages.kbytes": PREFETCH_KB})
    transport = open_transport("confluent", config=config)
    prefix = unique_name("pace")
    dense, sparse = f"{prefix}.dense", f"{prefix}.sparse"
    transport.create_topics([dense, sparse], partitions=1)
    _produce(kafka_bootstrap, dense, sparse)
    seen: dict[int, list[list[tuple[str, int]]]] = {0: [], WINDOW_MS: []}
    members = [
        TrackerGroupMember(
            transport, group_id=f"{prefix}-{window}", summary_topic=f"{prefix}-sum-{window}",
            topics=[dense, sparse], instance_id=f"w{window}",
            new_tracker=_recording(seen[window]),
            align_window_ms=window, commit_interval=0.5, poll_timeout=0.1, batch_size=500,
        ).start()
        for window in seen
    ]
    try:
        deadline = time.monotonic() + 60
        while any(_count(s) < DENSE + SPARSE for s in seen.values()):
            for member in members:
                assert member.error is None, member.error
            assert time.monotonic() < deadline, {w: _count(s) for w, s in seen.items()}
            time.sleep(0.1)
    finally:
        for member in members:
            member.stop()
    leads = {w: sorted(_leads(seen[w], sparse)) for w in seen}
    aligned, unaligned = leads[WINDOW_MS], leads[0]
    print(f"sparse lead (ms) p50/p90/max: aligned {aligned[len(aligned) // 2]}/"
          f"{aligned[len(aligned) * 9 // 10]}/{aligned[-1]}, unaligned "
          f"{unaligned[len(unaligned) // 2]}/{unaligned[len(unaligned) * 9 // 10]}/{unaligned[-1]}")
    assert members[1].alignment.pauses > 0
    assert aligned[len(aligned) * 9 // 10] <= 2 * WINDOW_MS, aligned[-20:]
    assert unaligned[len(unaligned) * 9 // 10] > 5 * WINDOW_MS, unaligned[-20:]
    for window, batches in seen.items():
        assert sorted(at for batch in batches for topic, at in batch if topic == dense) == [
            T0 + n for n in range(DENSE)
        ], window
