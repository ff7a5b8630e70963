"""A tracker group member rides a broker SIGKILLed and restarted on its own data: no summary
committed before is lost, the member resumes, and the summaries equal a fresh fold."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_group_kafka import Cluster, _committed, _finish, _sagas, snapshot

from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentTransport
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


_HANG_S = 8.0  # past the transport's bound (0.1 s + its grace, 5 s)


class _HangsOnce:
    """A real transactional producer whose first ``send_offsets_to_transaction`` hangs as
    librdkafka's does after a broker restart: the call outlives its bound, so the
    transport marks the client hung and abandons it (its close then fences the
    transactional id with a client of its own to abort the open transaction)."""

    def __init__(self, producer: Any, hangs: list[int]) -> None:
        self._producer = producer
        self._hangs = hangs

    def send_offsets_to_transaction(self, *args: Any) -> None:
        if self._hangs:
            self._hangs.pop()
            # the transport's own bounded call, given a call that outlives its bound
            self._producer._transaction_call(
                lambda: time.sleep(_HANG_S), "send_offsets_to_transaction", 0.1
            )
        self._producer.send_offsets_to_transaction(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


class _FirstProducerHangs(ConfluentTransport):
    """The confluent transport, except that its first transactional producer hangs once."""

    def __init__(self, config: KafkaConfig) -> None:
        super().__init__(config)
        self._hangs = [1]

    def producer(self, *, transactional_id: str | None = None) -> Any:
        made = super().producer(transactional_id=transactional_id)
        return _HangsOnce(made, self._hangs) if transactional_id else made


def test_a_producer_hung_in_a_periodic_commit_is_replaced_and_nothing_is_lost(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A periodic commit whose producer hung (librdkafka after a broker restart) replaces
    the producer, as a commit at a revocation does, and commits at the next interval: the
    member keeps running and its summaries equal a fresh fold.

    About 8 s: one group join and two reads to idle.
    """
    transport = _FirstProducerHangs(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    cluster = Cluster(transport, unique_name("hung"))
    finished, running = _sagas(20)
    cluster.produce([env for log in finished + running for env in log.envelopes])
    member = cluster.member("g", "a").start()
    try:
        cluster.wait_done([member])
        deadline = time.monotonic() + 30
        while _committed(kafka_bootstrap, "g", cluster.topics) < cluster.produced:
            assert member.error is None, member.error
            assert time.monotonic() < deadline, "nothing committed after the hung call"
            time.sleep(0.3)
        assert member.renewals == 1
        assert snapshot(cluster.materialized()) == snapshot(cluster.single_fold())
    finally:
        member.stop()
    assert member.error is None, member.error
