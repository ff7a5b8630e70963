"""Tracker instances in one consumer group on a real broker: their materialized summaries
equal a single-process fold, across rebalances, and the CLI and viewer read them."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from tracker_log import T0, SagaLog

from choreo.cli import main
from choreo.model.envelope import Envelope, Role
from choreo.tracker import LiveTracker, Tracker
from choreo.tracker.group import TrackerGroupMember
from choreo.tracker.live import read_topics
from choreo.transports.base import Transport
from choreo.transports.factory import open_transport
from choreo.viewer.web import ViewerServer

pytestmark = pytest.mark.kafka

PARTITIONS = 4
DEADLINE_S = 3600  # with the clock at T0 nothing is stuck: stuck marks depend on the clock


def _tracker() -> Tracker:
    return Tracker(default_deadline_s=DEADLINE_S, clock=lambda: T0 / 1000)


def _sagas(count: int) -> tuple[list[SagaLog], list[SagaLog]]:
    """Return finished sagas (mixed outcomes, one violating) and running ones (start only)."""
    finished: list[SagaLog] = []
    for index in range(count):
        log = SagaLog()
        if index % 3 == 0:
            log.declined()
        else:
            log.completed()
        finished.append(log)
    broken = finished[0]
    broken.emit(broken.envelopes[-1], "trk.OrderCompleted", Role.COMPLETED, "order")
    running = [SagaLog() for _ in range(count // 4)]
    for log in running:
        log.start()
    return finished, running


def _finish(running: list[SagaLog]) -> list[Envelope]:
    """Append the rest of each running saga (completed); return the new envelopes."""
    new: list[Envelope] = []
    for log in running:
        start = log.envelopes[0]
        before = len(log.envelopes)
        r = log.emit(start, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
        log.emit(r, "trk.OrderCompleted", Role.COMPLETED, "order", "order.complete")
        new.extend(log.envelopes[before:])
    return new


class Cluster:
    """A prefix of topics on the broker, and helpers to produce and to wait for a group."""

    def __init__(self, transport: Transport, prefix: str) -> None:
        self.transport = transport
        self.prefix = prefix
        self.summary_topic = f"{prefix}-summaries"
        types = ["trk.OrderCreated", "trk.InventoryReserved", "trk.PaymentCharged",
                 "trk.OrderShipped", "trk.OrderCompleted", "trk.PaymentDeclined",
                 "trk.InventoryReleased", "trk.OrderFailed"]
        self.topics = [f"{prefix}.{name}" for name in types]
        transport.create_topics(self.topics, partitions=PARTITIONS)
        self.produced = 0

    def produce(self, envelopes: list[Envelope]) -> None:
        producer = self.transport.producer()
        for env in envelopes:
            producer.publish(f"{self.prefix}.{env.event_type}", b"payload",
                             key=env.correlation_id.encode(), headers=env.to_headers())
        producer.flush()
        producer.close()
        self.produced += len(envelopes)

    def member(self, group: str, name: str) -> TrackerGroupMember:
        return TrackerGroupMember(
            self.transport, group_id=group, summary_topic=self.summary_topic,
            topics=self.topics, instance_id=name, new_tracker=_tracker,
            commit_interval=0.3, poll_timeout=0.1,
        )

    def wait_done(
        self, members: list[TrackerGroupMember], timeout: float = 60.0, *, committed: bool = True
    ) -> None:
        """Wait until the members folded every record produced and (unless ``committed``
        is false: a member that commits only as it stops) their group committed them: its
        summaries and offsets are one transaction, so the summary topic then holds what
        they folded. A fixed wait after the fold was too short on a loaded machine."""
        bootstrap = self.transport.config.bootstrap_servers  # type: ignore[attr-defined]
        groups = {member.group_id for member in members}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in members:
                assert member.error is None, member.error
            folded = sum(t.stats.records for m in members for t in list(m.trackers.values()))
            if folded == self.produced and (not committed or all(
                _committed(bootstrap, group, self.topics) == self.produced for group in groups
            )):
                return
            time.sleep(0.1)
        raise AssertionError(f"the group did not fold and commit {self.produced} records")

    def materialized(self) -> Tracker:
        return self.materialized_with(_tracker)

    def materialized_with(self, new: Callable[[], Tracker]) -> Tracker:
        """Return a tracker loaded from the summary topic; read again (up to 30 s) while
        its counters hold fewer events than were produced (a read stops after 1 s without
        a record, which a loaded broker's first fetch can outlast)."""
        deadline = time.monotonic() + 30
        while True:
            reader = new()
            reader.load_summaries(
                read_topics(self.transport, [self.summary_topic], idle_timeout=1.0)
            )
            if reader.stats.events >= self.produced or time.monotonic() > deadline:
                return reader

    def single_fold(self) -> Tracker:
        return self.single_fold_with(_tracker)

    def single_fold_with(self, new: Callable[[], Tracker]) -> Tracker:
        """Return a tracker fed the whole log; read again (up to 30 s) while the read came
        back short of what was produced (see :meth:`materialized_with`)."""
        deadline = time.monotonic() + 30
        while True:
            records = list(read_topics(self.transport, self.topics, idle_timeout=1.0))
            if len(records) >= self.produced or time.monotonic() > deadline:
                break
        single = new()
        single.feed_many(records)
        return single


def snapshot(tracker: Tracker) -> dict[str, tuple[Any, ...]]:
    """Return every saga's summary and event set, by correlation id."""
    return {
        trace.correlation_id: (
            trace.saga, trace.state, trace.status, trace.started_at_ms, trace.ended_at_ms,
            trace.deadline_ms, tuple(sorted(trace.events)),
            tuple(v.code for v in trace.violations),
        )
        for trace in tracker.find(limit=10**6)
    }


@pytest.fixture
def cluster(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Iterator[Cluster]:
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    yield Cluster(transport, unique_name("grp"))


def _stop(*members: TrackerGroupMember) -> None:
    for member in members:
        member.stop()
    for member in members:
        assert member.error is None, member.error


def test_two_instances_materialize_what_one_process_folds(cluster: Cluster) -> None:
    """Two members of one group, each folding its partitions, publish exactly the summaries
    a single process folding the whole log computes.

    About 12 s: a broker round of group joins, a rebalance and two reads to idle.
    """
    finished, running = _sagas(60)
    cluster.produce([env for log in finished + running for env in log.envelopes])
    first, second = cluster.member("g", "a").start(), cluster.member("g", "b").start()
    try:
        # Under load the second member may join after the first folded everything: wait
        # for the group to split the partitions, so both fold or inherit a share.
        deadline = time.monotonic() + 60
        while not (first.trackers and second.trackers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.trackers and second.trackers  # both own partitions
        cluster.wait_done([first, second])
        assert not set(first.trackers) & set(second.trackers)
        single = cluster.single_fold()
        expected = snapshot(single)
        view = cluster.materialized()
        assert snapshot(view) == expected
        assert len(expected) == len(finished) + len(running)
        assert view.counts() == single.counts()
        assert view.stats.events == cluster.produced  # the partitions' counters, summed
    finally:
        _stop(first, second)


def test_rebalance_mid_run_keeps_summaries_equal(cluster: Cluster) -> None:
    """A member added mid-run, then the first one removed: the partitions' new owners
    resume from the materialized state plus the log after its checkpoint, and the running
    sagas they inherit complete correctly.

    About 12 s: three rebalances (a join, a leave) with a summary load each.
    """
    finished, running = _sagas(40)
    cluster.produce([env for log in finished[:20] + running for env in log.envelopes])
    first = cluster.member("g", "a").start()
    second: TrackerGroupMember | None = None
    try:
        cluster.wait_done([first])
        assert set(first.trackers) == set(range(PARTITIONS))
        second = cluster.member("g", "b").start()
        assert second.wait_assigned(60)  # the group has split the partitions
        cluster.produce([env for log in finished[20:] for env in log.envelopes])
        cluster.wait_done([first, second])
        assert second.trackers and len(first.trackers) < PARTITIONS
        _stop(first)
        cluster.produce(_finish(running))  # events of sagas the first member folded
        cluster.wait_done([second])
        assert set(second.trackers) == set(range(PARTITIONS))
        assert second.loads >= 2  # loaded what the first member materialized
        view = cluster.materialized()
        assert snapshot(view) == snapshot(cluster.single_fold())
        assert view.counts()[next(iter(view.counts()))] >= 0
        completed = {t.correlation_id for t in view.find(limit=10**6)
                     if t.state.value == "Completed"}
        assert {log.cid for log in running} <= completed
    finally:
        _stop(*(m for m in (first, second) if m is not None))


def test_cli_and_viewer_read_the_materialized_view(
    cluster: Cluster, kafka_bootstrap: str
) -> None:
    """`choreo sagas --summaries` and a viewer following the summary topic show the sagas
    the group materialized, without reading the event topics."""
    finished, running = _sagas(12)
    cluster.produce([env for log in finished + running for env in log.envelopes])
    member = cluster.member("g", "a").start()
    try:
        cluster.wait_done([member])
    finally:
        _stop(member)
    expected = cluster.single_fold()
    listed = f"{expected.total()} saga(s), newest first"
    deadline = time.monotonic() + 60
    while True:  # its read stops after 2 s without a record: a loaded broker can outlast it
        result = CliRunner().invoke(main, [
            "sagas", "--bootstrap", kafka_bootstrap, "--summaries", cluster.summary_topic,
            "--idle", "2", "--limit", "100", "--deadline", str(DEADLINE_S),
        ])
        if listed in result.output or time.monotonic() > deadline:
            break
    assert result.exit_code == 0, result.output
    assert listed in result.output
    assert finished[1].cid in result.output and running[0].cid in result.output
    # the counters are the partitions' materialized ones: every event folded by the group
    assert f"{expected.total()} sagas, {cluster.produced} events" in result.output

    viewer_tracker = _tracker()
    live = LiveTracker(viewer_tracker, cluster.transport, topics=[cluster.summary_topic],
                       materialized=True, poll_timeout=0.1).start()
    try:
        with ViewerServer(viewer_tracker) as server:
            deadline = time.monotonic() + 30
            page: dict[str, Any] = {}
            while time.monotonic() < deadline:
                with urllib.request.urlopen(server.url + "api/sagas?limit=500") as response:
                    page = json.loads(response.read())
                if page["total"] == expected.total():
                    break
                time.sleep(0.2)
            assert page["total"] == expected.total()
            rows = {row["correlation_id"]: row for row in page["items"]}
            violated = rows[finished[0].cid]
            broken = expected.get(finished[0].cid)
            assert broken is not None and broken.violations
            assert violated["status"] == "Violated"
            assert violated["violations"] == len(broken.violations)
            assert rows[running[0].cid]["status"] == "Started"
            assert rows[finished[1].cid]["event_count"] == len(finished[1].envelopes)
            detail_url = server.url + "api/saga?id=" + finished[1].cid
            with urllib.request.urlopen(detail_url) as response:
                detail = json.loads(response.read())
            assert [e["event_id"] for e in detail["events"]] == [
                env.event_id for env in finished[1].envelopes
            ]
    finally:
        live.stop()


def _committed(bootstrap: str, group: str, topics: list[str]) -> int:
    """Return the sum of ``group``'s committed offsets on ``topics`` (read from the broker)."""
    import confluent_kafka as ck

    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [ck.TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        try:
            return sum(max(tp.offset, 0) for tp in consumer.committed(wanted, timeout=10))
        except ck.KafkaException:  # the coordinator is not ready yet
            return 0
    finally:
        consumer.close()


def test_sigkill_of_an_instance_loses_nothing(
    cluster: Cluster, kafka_bootstrap: str, tmp_path: Any
) -> None:
    """An instance process SIGKILLed while events arrive: its open transaction is aborted,
    and the instance that takes its partitions leaves the summaries equal to a single fold.

    About 15 s: the group must wait out the dead member's session (6 s, the broker's least).
    """
    import os
    import signal
    import subprocess
    import sys

    from choreo.transports.config import KafkaConfig

    now_ms = int(time.time() * 1000)  # the subprocess judges deadlines by the wall clock
    logs = [SagaLog(start_ms=now_ms) for _ in range(60)]
    for index, log in enumerate(logs):
        log.completed() if index % 2 else log.start()
    cluster.produce([env for log in logs for env in log.envelopes])
    props = tmp_path / "client.properties"
    props.write_text("session.timeout.ms=6000\nheartbeat.interval.ms=500\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo", "tracker", "run", "--bootstrap", kafka_bootstrap,
         "--config", str(props), "--group", "g", "--summary-topic", cluster.summary_topic,
         "--topics", "^" + re.escape(cluster.prefix) + r"\.", "--commit-interval", "0.2",
         "--deadline", "3600", "--instance-id", "doomed"],
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while _committed(kafka_bootstrap, "g", cluster.topics) < cluster.produced:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the instance process did not catch up"
            time.sleep(0.2)
        more = _finish([log for log in logs if len(log.envelopes) == 1])
        cluster.produce(more)
        time.sleep(0.3)  # let it fold some of them, maybe mid-transaction
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap,
                         consumer={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    heir = TrackerGroupMember(
        open_transport("confluent", config=config), group_id="g",
        summary_topic=cluster.summary_topic, topics=cluster.topics, instance_id="heir",
        new_tracker=lambda: Tracker(default_deadline_s=3600), commit_interval=0.3,
        poll_timeout=0.1,
    ).start()
    try:
        cluster.wait_done([heir])
        view = cluster.materialized_with(lambda: Tracker(default_deadline_s=3600))
        single = cluster.single_fold_with(lambda: Tracker(default_deadline_s=3600))
        assert snapshot(view) == snapshot(single)
        assert all(t.state.value == "Completed" for t in view.find(limit=10**6))
    finally:
        _stop(heir)
