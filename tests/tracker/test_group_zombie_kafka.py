"""A tracker group member that lost its partitions without noticing (a zombie) on a real
broker: nothing it commits afterwards, summaries or offsets, becomes visible."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
from test_group_kafka import DEADLINE_S, Cluster, _committed, _finish, snapshot
from tracker_log import T0, SagaLog

from choreo.tracker import Tracker
from choreo.tracker.group import TrackerGroupMember
from choreo.transports.base import Record
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

pytestmark = pytest.mark.kafka

SESSION_MS = 6000  # the broker's least session timeout
MAX_POLL_MS = 7000  # librdkafka wants it >= the session timeout


@pytest.fixture
def cluster(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Iterator[Cluster]:
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    yield Cluster(transport, unique_name("zmb"))


class Gate:
    """Holds a tracker's ``feed_many`` while closed: a member stalled mid-batch (a long
    GC pause, a swapped-out process) whose client keeps heartbeating."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()

    def tracker(self) -> Tracker:
        gate = self

        class Gated(Tracker):
            def feed_many(self, records: Iterable[Record], *, settle: bool = True) -> int:
                batch = list(records)
                if batch and not gate.open.is_set():
                    gate.entered.set()
                    gate.open.wait(120)
                return super().feed_many(batch, settle=settle)

        return Gated(default_deadline_s=DEADLINE_S, clock=lambda: T0 / 1000)


def _started(count: int) -> list[SagaLog]:
    logs = [SagaLog() for _ in range(count)]
    for log in logs:
        log.start()
    return logs


def test_a_member_past_its_poll_interval_commits_nothing(
    cluster: Cluster, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A member stalled in a batch past ``max.poll.interval.ms`` loses its partitions to
    another member, which folds the sagas of that batch to their end. When the stalled
    member wakes up it commits what it folded from that batch: the sagas that ended in it
    at its next interval, then every saga (still started, to its eyes) and its offsets
    as it stops. The group coordinator refuses both (the member id it carries is no longer in
    the group), so nothing of them is visible: no saga goes back to Started, the group's
    offsets do not move back, and the summaries equal a single-process fold.

    About 25 s: the stalled member's poll interval (7 s), then a rebalance and a load.
    """
    caplog.set_level(logging.WARNING, logger="choreo.tracker")
    gate = Gate()
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap, consumer={
        "session.timeout.ms": SESSION_MS, "max.poll.interval.ms": MAX_POLL_MS,
        "heartbeat.interval.ms": 500,
    })
    group = f"{cluster.prefix}-g"
    zombie = TrackerGroupMember(
        open_transport("confluent", config=config), group_id=group,
        summary_topic=cluster.summary_topic, topics=cluster.topics, instance_id="zombie",
        new_tracker=gate.tracker, commit_interval=0.3, poll_timeout=0.1,
    ).start()
    heir: TrackerGroupMember | None = None
    try:
        first = _started(10)
        cluster.produce([env for log in first for env in log.envelopes])
        cluster.wait_done([zombie])
        commits = zombie.commits
        gate.open.clear()
        running = _started(20)  # the zombie stalls feeding these
        ended = [SagaLog().completed() for _ in range(10)]
        cluster.produce([env for log in running + ended for env in log.envelopes])
        assert gate.entered.wait(30)
        heir = cluster.member(group, "heir").start()
        assert heir.wait_assigned(60)  # once the zombie's poll interval ran out
        cluster.produce(_finish(first + running))  # the heir folds them to the end
        deadline = time.monotonic() + 60
        while _committed(kafka_bootstrap, group, cluster.topics) < cluster.produced:
            assert heir.error is None, heir.error
            assert time.monotonic() < deadline, "the heir did not commit everything"
            time.sleep(0.2)
        zombie.stop(timeout=0)  # it commits (at the interval, then at its stop) and leaves
        gate.open.set()
        zombie.stop()
        assert not zombie.running
        assert zombie.commits == commits  # every commit after the stall was refused:
        assert "UNKNOWN_MEMBER_ID" in str(zombie.error)  # the one as it stopped, and
        refused = [r.getMessage() for r in caplog.records  # the one at its interval, when
                   if r.getMessage().startswith("tracker commit failed")]  # it had one
        assert all("UNKNOWN_MEMBER_ID" in message for message in refused)
        assert _committed(kafka_bootstrap, group, cluster.topics) == cluster.produced
        view = cluster.materialized()
        assert snapshot(view) == snapshot(cluster.single_fold())
        assert {t.state.value for t in view.find(limit=10**6)} == {"Completed"}
    finally:
        gate.open.set()
        for member in (zombie, heir):
            if member is not None:
                member.stop()
        assert heir is None or heir.error is None, heir.error
