"""The tracker's compacted summary topic on the session's real broker, through both Kafka
transports: created compacted, its partitions counted, and no warning when it exists."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from choreo.transports.admin import create_compacted_topic, partition_count
from choreo.transports.factory import open_transport
from tests.transports.topic_settings import topic_settings

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_a_compacted_topic_is_created_compacted_and_counted_by_either_client(
    kind: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Created with ``cleanup.policy=compact`` and the partitions asked; a second call
    finds it and warns of nothing; a topic that does not exist has no count."""
    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    topic = unique_name("summaries")
    assert partition_count(transport, topic) is None
    with caplog.at_level(logging.WARNING, logger="choreo"):
        create_compacted_topic(transport, topic, partitions=3)
        assert partition_count(transport, topic) == 3
        create_compacted_topic(transport, topic, partitions=3)  # exists: left as it is
    # choreo's own records: kafka-python warns of its event loop's slow tasks under load
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warned if r.name.startswith("choreo")] == []
    settings = topic_settings(kafka_bootstrap, topic)
    assert settings is not None and settings[2] == "compact"
