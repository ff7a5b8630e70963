"""A consumer fenced while the worker backs off ends the back-off with its fatal error.

librdkafka reports a static member's fencing once (``_FATAL``); a back-off that logged it
and waited on left a worker alive that owned no partition and never exited (seen in
chaos ``eos-broker-restart``: a replica fenced after the broker restart idled for good).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

from choreo.errors import TransportError
from choreo.model.context import EventLogger
from choreo.runtime.pauses import Pauses
from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentTransport

pytestmark = pytest.mark.kafka


def test_a_fatal_consumer_error_during_the_backoff_is_raised(kafka_bootstrap: str) -> None:
    """A static member fenced by a second one with its instance id: back_off raises."""
    transport = ConfluentTransport(
        KafkaConfig(
            bootstrap_servers=kafka_bootstrap,
            consumer={"heartbeat.interval.ms": 300, "session.timeout.ms": 45_000},
        )
    )
    topic = f"backoff-fenced-{uuid.uuid4().hex[:8]}"
    transport.create_topics([topic], partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = transport.consumer(group, instance_id="replica-0")
    second = transport.consumer(group, instance_id="replica-0")
    pauses = Pauses(EventLogger(logging.getLogger("test"), {}))
    rewound: list[dict[TopicPartition, int]] = []
    try:
        first.subscribe([topic])
        deadline = time.monotonic() + 20
        while not first.assignment():
            assert time.monotonic() < deadline, "first member never assigned"
            first.poll(timeout=0.2)
        second.subscribe([topic])  # joins with the same instance id: fences the first
        second.poll(timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TransportError) as fenced:
            pauses.back_off(
                first,
                20.0,
                stop=threading.Event(),
                max_records=10,
                poll_timeout=0.2,
                rewind=rewound.append,
            )
        assert fenced.value.fatal
        assert "fenced" in str(fenced.value).lower()
        assert time.monotonic() - started < 20.0  # raised, not waited out
    finally:
        second.close()
        first.close()
