"""Topics choreo creates take records at once: every partition is online on its leader.

A new topic's name and leaders show in metadata before the leader serves its partitions
(the broker applies the metadata, then creates the logs). A record produced in that window
fails with NOT_LEADER_OR_FOLLOWER and is retried, and a broker before Kafka 4.5 can drop an
idempotent producer's retried first request without any error (KAFKA-15591; see
:mod:`choreo.transports.readiness`): the e2e shop test lost three start events that way, the
order service's outbox deleted them as acknowledged. So ``create_topics`` returns only once
every partition answers on its leader. The test asks every partition straight after it
returned, once, with a client that is already connected (as a service's is): when
``create_topics`` waited for the names (confluent) or the leaders in metadata
(kafka-python) only, 114 to 116 of the 120 partitions answered NOT_LEADER_OR_FOLLOWER.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # OffsetSpec: not in __all__
    AdminClient,
    OffsetSpec,
)

from choreo.transports.base import Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentTransport

pytestmark = pytest.mark.kafka

TOPICS = 20
PARTITIONS = 6  # 120 partitions in one call, about as many as the shop's 42 topics of 3


def _names(prefix: str) -> list[str]:
    run = uuid.uuid4().hex[:10]
    return [f"{prefix}-{run}-{n:02d}" for n in range(TOPICS)]


def _confluent(bootstrap: str) -> Transport:
    return ConfluentTransport(KafkaConfig(bootstrap_servers=bootstrap))


def _kafka_python(bootstrap: str) -> Transport:
    pytest.importorskip("kafka")
    from choreo.transports.kafka_python import KafkaPythonTransport

    return KafkaPythonTransport(KafkaConfig(bootstrap_servers=bootstrap))


def _warm_admin(bootstrap: str) -> AdminClient:
    """Return an admin client already connected to the cluster."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.list_topics(timeout=30)
    return admin


def _latest_of_every_partition(topics: list[str]) -> dict[ck.TopicPartition, OffsetSpec]:
    """Return a ListOffsets request for the end of every partition of ``topics``."""
    latest: Callable[[], OffsetSpec] = OffsetSpec.latest
    return {ck.TopicPartition(t, p): latest() for t in topics for p in range(PARTITIONS)}


def _not_answering(admin: AdminClient, topics: list[str]) -> list[str]:
    """Ask every partition's leader for its end offset once; return those that failed."""
    request = _latest_of_every_partition(topics)
    failed = []
    for tp, future in admin.list_offsets(request, request_timeout=10).items():
        try:
            future.result()
        except ck.KafkaException as exc:
            failed.append(f"{tp.topic}[{tp.partition}]: {exc}")
    return failed


@pytest.mark.parametrize("make", [_confluent, _kafka_python], ids=["confluent", "kafka-python"])
def test_create_topics_returns_once_every_partition_answers_on_its_leader(
    kafka_bootstrap: str, make: Callable[[str], Transport], caplog: pytest.LogCaptureFixture
) -> None:
    """Right after create_topics, every partition's leader serves it (ListOffsets, no retry).

    And the wait ended because they did, not because it gave up (no warning).
    """
    transport = make(kafka_bootstrap)
    admin = _warm_admin(kafka_bootstrap)
    topics = _names("ready")
    with caplog.at_level(logging.WARNING, logger="choreo.transports"):
        transport.create_topics(topics, partitions=PARTITIONS)
    failed = _not_answering(admin, topics)
    assert not failed, f"{len(failed)} of {TOPICS * PARTITIONS} partitions not online: {failed[:3]}"
    assert not [r for r in caplog.records if "not online" in r.getMessage()]
