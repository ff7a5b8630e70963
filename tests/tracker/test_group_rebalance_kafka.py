"""Tracker group members on a real broker while the group rebalances: a member joining
mid-fold (the first one commits in its revocation callback, with no hung call and no
producer replaced), and the pacing's pauses and resumes across a rebalance."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import confluent_kafka as ck
import pytest
from test_group_kafka import Cluster, snapshot
from tracker_log import SagaLog

from choreo.tracker import Tracker
from choreo.tracker.group import TrackerGroupMember
from choreo.transports.base import Record
from choreo.transports.factory import open_transport

pytestmark = pytest.mark.kafka


@pytest.fixture
def cluster(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Iterator[Cluster]:
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    yield Cluster(transport, unique_name("reb"))


class Feeder:
    """Produces a few whole sagas every ``pause`` seconds on a thread until stopped."""

    def __init__(self, cluster: Cluster, per_round: int = 5, pause: float = 0.05) -> None:
        self.cluster, self.per_round, self.pause = cluster, per_round, pause
        self.logs: list[SagaLog] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cluster = self.cluster
        producer = cluster.transport.producer()
        try:
            while not self._stop.is_set():
                for _ in range(self.per_round):
                    log = SagaLog()
                    log.completed()
                    for env in log.envelopes:
                        producer.publish(f"{cluster.prefix}.{env.event_type}", b"payload",
                                         key=env.correlation_id.encode(),
                                         headers=env.to_headers())
                    cluster.produced += len(log.envelopes)
                    self.logs.append(log)
                producer.flush()
                time.sleep(self.pause)
        finally:
            producer.close()

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_member_joining_mid_fold_causes_no_hung_commit(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A second member joins while the first folds a log still being written: the first
    one's commit in its revocation callback (summaries and offsets, one transaction)
    succeeds, no transactional call hangs, no producer is replaced, and the summaries equal
    a single-process fold.

    About 10 s: a rebalance with two summary loads, and a fold of ~2,000 sagas.
    """
    caplog.set_level(logging.WARNING, logger="choreo")
    group = f"{cluster.prefix}-g"  # its own group: another test's killed member may linger in "g"
    first = cluster.member(group, "a")
    first.commit_interval = 600.0  # no periodic commit: its revocation commits what it folded
    first.start()
    second: TrackerGroupMember | None = None
    try:
        with Feeder(cluster):
            deadline = time.monotonic() + 60
            while not _folded(first) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _folded(first)  # folding: the join comes mid-fold
            second = cluster.member(group, "b").start()
            assert second.wait_assigned(60)
            time.sleep(1.0)  # both fold what is still being written
        cluster.wait_done([first, second], committed=False)  # the first commits as it stops
        assert second.trackers and first.trackers
        first.stop()  # each commits what it holds as it stops
        second.stop()
        assert first.revocation_commits >= 1  # the callback committed folded work
        assert first.renewals == 0 and second.renewals == 0
        problems = [r.getMessage() for r in caplog.records
                    if "revocation" in r.getMessage() or "did not return" in r.getMessage()
                    or "replaced its producer" in r.getMessage()]
        assert problems == []
        assert snapshot(cluster.materialized()) == snapshot(cluster.single_fold())
    finally:
        for member in (first, second):
            if member is not None:
                member.stop()
        for member in (first, second):
            assert member is None or member.error is None, member.error


def _folded(member: TrackerGroupMember) -> int:
    return sum(tracker.stats.records for tracker in list(member.trackers.values()))


class Recording(Tracker):
    """A tracker that notes where each record it is fed came from, in feeding order."""

    fed: list[list[tuple[str, int, int]]] = []

    def __init__(self) -> None:
        super().__init__(default_deadline_s=3600)
        self.order: list[tuple[str, int, int]] = []
        Recording.fed.append(self.order)

    def feed_many(self, records: Iterable[Record], *, settle: bool = True) -> int:
        batch = list(records)
        self.order.extend((r.topic, r.partition, r.offset) for r in batch)
        return super().feed_many(batch, settle=settle)


def _raw_producer(bootstrap: str) -> ck.Producer:
    """A raw client: the records need timestamps of their own (the pacing reads them)."""
    return ck.Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})


def _publish(producer: ck.Producer, topic: str, logs: list[SagaLog], at_ms: int) -> None:
    for log in logs:
        env = log.envelopes[0]
        producer.produce(topic, b"payload", env.correlation_id.encode(),
                         headers=list(env.to_headers()), timestamp=at_ms)
    producer.flush(30)


def _started(count: int) -> list[SagaLog]:
    logs = [SagaLog() for _ in range(count)]
    for log in logs:
        log.start()
    return logs


def _fed(topic: str) -> set[tuple[str, int, int]]:
    return {where for order in Recording.fed for where in order if where[0] == topic}


def test_pacing_pauses_the_partitions_ahead_and_resumes_them_after_a_rebalance(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Records an hour ahead of the ones being read are held and their partitions paused
    while the others are read, paused again by their owners after a member joins, and
    resumed (every record folded) once the others fall idle: a partition paused before a
    rebalance and assigned again is read.

    About 5 s: a rebalance, and a second of idleness before the resume.
    """
    Recording.fed = []
    prefix = unique_name("pace")
    slow, ahead = f"{prefix}.slow", f"{prefix}.ahead"
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    transport.create_topics([slow, ahead], partitions=2)
    producer = _raw_producer(kafka_bootstrap)
    stop = threading.Event()

    def keep_writing() -> None:  # the slow topic stays busy (not idle) until stopped
        while not stop.is_set():
            _publish(producer, slow, _started(4),
                     int(time.time() * 1000))
            time.sleep(0.05)

    def member(name: str) -> TrackerGroupMember:
        return TrackerGroupMember(
            transport, group_id=f"{prefix}-g", summary_topic=f"{prefix}-summaries",
            topics=[slow, ahead],
            instance_id=name, new_tracker=Recording, commit_interval=0.3, poll_timeout=0.1,
        )

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    first = member("a").start()
    second: TrackerGroupMember | None = None
    try:
        deadline = time.monotonic() + 30
        while not _fed(slow) and time.monotonic() < deadline:
            time.sleep(0.05)
        ahead_logs = _started(20)
        _publish(producer, ahead, ahead_logs, int(time.time() * 1000) + 3_600_000)
        while first.alignment.pauses < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.alignment.pauses >= 2  # both partitions of the topic ahead
        time.sleep(0.5)
        assert not _fed(ahead)  # held back while the slow topic is read

        second = member("b").start()
        assert second.wait_assigned(60)
        deadline = time.monotonic() + 30
        while second.alignment.pauses < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.alignment.pauses >= 1  # the new owner paused its partition again
        stop.set()
        writer.join(30)
        deadline = time.monotonic() + 30  # idle after a second: everything is resumed
        while len(_fed(ahead)) < len(ahead_logs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_fed(ahead)) == len(ahead_logs)
        while (first.alignment.paused or second.alignment.paused) and time.monotonic() < deadline:
            time.sleep(0.1)  # the last resume may follow the last record by a poll
        assert not first.alignment.paused and not second.alignment.paused
    finally:
        stop.set()
        for each in (first, second):
            if each is not None:
                each.stop()
        for each in (first, second):
            assert each is None or each.error is None, each.error
