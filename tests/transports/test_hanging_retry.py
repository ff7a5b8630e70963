"""The worker's search for its id's hanging transactions tries again after a broker stall.

Right after a broker restart (when hanging transactions appear) the cluster answers
slowly or not at all for a while: leaders move, coordinators load their state. A search
that fails once then must not leave the replica waiting for good on its group's pending
offsets (it has no other chance: a replica started as a new process searches once). Here
the broker of this module's own is stopped (SIGSTOP) while the search starts and resumed
(SIGCONT) seconds later: the search's first calls time out, a later attempt finds and ends
the transaction.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.hanging import end_own_hanging, find_hanging
from tests.transports.test_hanging_transactions import (
    _topics,
    leave_hanging,
    start_unverified_broker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

pytest.importorskip("kafka")  # the pure-Python client: a dev dependency

STALL_S = 2.5
"""How long the broker is stopped: longer than the search's 1 s bound per call."""


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    """A broker of this module's own (partition verification off, as for the hanging tests)."""
    instance = start_unverified_broker()
    try:
        yield instance
    finally:
        instance.process.send_signal(signal.SIGCONT)  # never leave it stopped
        instance.stop()


def test_a_search_that_meets_a_stalled_broker_tries_again(broker: Any) -> None:
    """The broker stalls for STALL_S as the search starts: it still ends the transaction."""
    bootstrap = str(broker.bootstrap)
    topic, side = f"hang-{uuid.uuid4().hex[:8]}", f"side-{uuid.uuid4().hex[:8]}"
    _topics(bootstrap, topic, side)
    transactional_id = f"stall-{uuid.uuid4().hex[:8]}"
    leave_hanging(
        bootstrap, visible=side, hidden=topic, transactional_id=transactional_id
    ).close(timeout=5)
    config = KafkaConfig(bootstrap_servers=bootstrap)
    resume = threading.Timer(STALL_S, broker.process.send_signal, (signal.SIGCONT,))
    broker.process.send_signal(signal.SIGSTOP)
    resume.start()
    try:
        ended = end_own_hanging(config, transactional_id, timeout=1.0)
    finally:
        resume.join()
    assert [h.partition for h in ended] == [TopicPartition(topic, 0)]
    assert find_hanging(config, [topic], min_age=0.0) == []
