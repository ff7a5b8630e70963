"""Fatal librdkafka errors are raised, never logged and ignored; hung calls count as fatal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import confluent_kafka as ck
import pytest

from choreo.errors import TransactionError, TransportError
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentConsumer, ConfluentProducer


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


def test_a_transactional_call_that_outlives_its_timeout_is_fatal() -> None:
    """A librdkafka call hung past its timeout ends the producer fatally, without hanging close.

    librdkafka's send_offsets_to_transaction can ignore its timeout while the group
    coordinator is unreachable; the call is bounded by a helper thread. Here the hung call
    is a real blocking wait (nothing of Kafka is replaced: the producer is real and never
    connects). A call that returns in time hands its error back unchanged; after a hung
    call every later one fails at once (its thread is still stuck), and close abandons
    the client instead of waiting for it.
    """
    producer = ConfluentProducer(KafkaConfig(bootstrap_servers="127.0.0.1:9"))
    release = threading.Event()
    try:
        failure = ck.KafkaException(ck.KafkaError(ck.KafkaError._TIMED_OUT, "slow"))
        with pytest.raises(ck.KafkaException):
            producer._bounded(_raiser(failure), "send_offsets_to_transaction", 5.0)
        with pytest.raises(TransactionError, match="did not return within") as hung:
            producer._bounded(lambda: release.wait(30), "send_offsets_to_transaction", 0.2)
        assert hung.value.fatal
        started = time.monotonic()
        with pytest.raises(TransactionError, match="hung in send_offsets_to_transaction"):
            producer._bounded(lambda: None, "commit_transaction", 5.0)
        assert time.monotonic() - started < 4.0  # at once, not after its 5 s bound
        started = time.monotonic()
        producer.close()  # hung: abandoned, neither flushed nor destroyed
        assert time.monotonic() - started < 4.0  # at once (a close that waits has 10 s)
    finally:
        release.set()


def _raiser(error: BaseException) -> Callable[[], None]:
    def call() -> None:
        raise error

    return call
