"""A tracker group member rides a broker SIGKILLed and restarted on its own data: no summary
committed before is lost, the member resumes, and the summaries equal a fresh fold."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_group_kafka import Cluster, _committed, _finish, _sagas, snapshot

from choreo.transports.factory import open_transport
from tests.conftest import load_kafka_broker_module

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def broker() -> Iterator[Any]:
    """A broker of this test's own (it is killed and restarted)."""
    with load_kafka_broker_module().KafkaBroker(port=0) as instance:
        yield instance


def test_a_broker_restart_loses_no_summary(broker: Any) -> None:
    """The broker is SIGKILLed while the member folds and commits a batch, and restarted
    on the same data dir: every summary committed before stays, the member's failed
    commits are retried, it reads on from the committed offsets, and once it committed
    every event the summary topic equals a single-process fold of the whole log.

    About 40 s: a broker of its own, started twice, and the group's recovery.
    """
    cluster = Cluster(open_transport("confluent", bootstrap=broker.bootstrap), "rst")
    finished, running = _sagas(40)
    cluster.produce([env for log in finished + running for env in log.envelopes])
    member = cluster.member("g", "a").start()
    try:
        cluster.wait_done([member])
        before = snapshot(cluster.materialized())
        assert len(before) == len(finished) + len(running)
        more, _ = _sagas(40)
        cluster.produce(_finish(running) + [env for log in more for env in log.envelopes])
        time.sleep(0.3)  # folding and committing that batch
        broker.kill()
        time.sleep(1.0)
        broker.restart()
        late, _ = _sagas(20)
        cluster.produce([env for log in late for env in log.envelopes])
        deadline = time.monotonic() + 120
        while _committed(broker.bootstrap, "g", cluster.topics) < cluster.produced:
            assert member.error is None, member.error
            assert time.monotonic() < deadline, "the member did not resume after the restart"
            time.sleep(0.5)
        time.sleep(1.0)  # several commit intervals
        assert member.error is None, member.error
        view = snapshot(cluster.materialized())
        assert view == snapshot(cluster.single_fold())
        assert before.keys() <= view.keys()  # nothing committed before the kill was lost
        assert len(view) == len(finished) + len(running) + len(more) + len(late)
        completed = {cid for cid, row in view.items() if row[1].value == "Completed"}
        assert {log.cid for log in running} <= completed
    finally:
        member.stop()
    assert member.error is None, member.error
