"""A fatal consumer error from librdkafka is raised, never logged and ignored."""

from __future__ import annotations

import confluent_kafka as ck
import pytest

from choreo.errors import TransportError
from choreo.transports.confluent import ConfluentConsumer


def test_a_fenced_static_member_is_raised_not_logged() -> None:
    """librdkafka's _FATAL event (its fatal() is False) ends polling with a non-retriable error."""
    fenced = ck.KafkaError(
        ck.KafkaError._FATAL,
        "Fatal error: Broker: Static consumer fenced by other consumer with same"
        " group.instance.id",
    )
    assert not fenced.fatal()  # why the code itself must be checked
    with pytest.raises(TransportError) as raised:
        ConfluentConsumer._on_error(fenced)
    assert not raised.value.retriable
    assert "fenced" in str(raised.value)


def test_end_of_partition_is_not_an_error() -> None:
    """The end of a partition is skipped silently."""
    ConfluentConsumer._on_error(ck.KafkaError(ck.KafkaError._PARTITION_EOF))
