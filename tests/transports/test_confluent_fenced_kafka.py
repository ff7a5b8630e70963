"""A fenced confluent producer says so with choreo's own errors, whatever call meets it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from choreo.errors import ChoreoError, TransactionError, TransportError
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentProducer
from choreo.transports.factory import open_transport


def test_a_fenced_producer_fails_with_transaction_errors_only(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A producer fenced mid-transaction by a newer one with its transactional id fails
    its commit fatally, and its abort (the caller's clean-up) raises a TransactionError
    too: librdkafka's poll raises the client's fatal error, which must not escape as the
    client library's own exception (a tracker member stopped on it).
    """
    topic, config, txn_id = _setting(kafka_bootstrap, unique_name, "fenced")
    old = ConfluentProducer(config, transactional_id=txn_id)
    try:
        old.begin_transaction()
        old.publish(topic, b"v", key=b"k")
        newer = ConfluentProducer(config, transactional_id=txn_id)  # fences the old one
        newer.close()
        with pytest.raises(TransactionError) as commit:
            old.commit_transaction(10.0)
        assert commit.value.fatal
        for _ in range(2):  # the abort, then again once the fatal error was served
            with pytest.raises(ChoreoError) as abort:
                old.abort_transaction(10.0)
            assert isinstance(abort.value, TransactionError) and abort.value.fatal
    finally:
        old.close()


@pytest.mark.parametrize("call", ["flush", "close"])
def test_a_producer_fenced_with_a_record_in_flight_flushes_and_closes_with_choreos_errors(
    kafka_bootstrap: str, unique_name: Callable[[str], str], call: str
) -> None:
    """A record produced after a newer instance fenced the producer fails with the fatal
    ``_FENCED`` error; librdkafka's flush raises it, and confluent-kafka's flush then
    serves the record's delivery report with that exception pending, which surfaced as
    an ``AttributeError`` of the delivery callback (from ``flush`` and from ``close``,
    which then never released the client). ``flush`` raises a fatal TransportError;
    ``close`` logs and releases.
    """
    topic, config, txn_id = _setting(kafka_bootstrap, unique_name, "fenced-flush")
    old = ConfluentProducer(config, transactional_id=txn_id)
    try:
        old.begin_transaction()
        old.publish(topic, b"before", key=b"k")
        old.flush(10.0)
        newer = ConfluentProducer(config, transactional_id=txn_id)  # fences the old one
        newer.close()
        old.publish(topic, b"after", key=b"k")  # refused by the broker: an old epoch
        if call == "flush":
            with pytest.raises(TransportError) as flushed:
                old.flush(10.0)
            assert flushed.value.fatal
        else:
            old.close()  # must not raise
    finally:
        old.close()


def test_a_fatal_error_served_by_a_poll_is_said_by_the_next_flush(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """The poll that serves callbacks (every 256 records, before a transaction) only
    remembers a fatal error: the next flush says it as a fatal TransportError, not as a
    delivery failure to retry (nor not at all, once nothing is queued)."""
    topic, config, txn_id = _setting(kafka_bootstrap, unique_name, "fenced-poll")
    old = ConfluentProducer(config, transactional_id=txn_id)
    try:
        old.begin_transaction()
        ConfluentProducer(config, transactional_id=txn_id).close()  # fences the old one
        old.publish(topic, b"after", key=b"k")  # refused by the broker: an old epoch
        deadline = time.monotonic() + 30
        while not old._failed_fatally and time.monotonic() < deadline:
            old._serve_callbacks()  # what publish and renew_if_stale call
            time.sleep(0.05)
        assert old._failed_fatally, "the fatal error never reached the producer"
        with pytest.raises(TransportError) as flushed:
            old.flush(10.0)
        assert flushed.value.fatal
    finally:
        old.close()


def test_closing_a_hung_producer_leaves_a_newer_one_of_its_id_usable(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A producer hung in a transactional call and replaced by a newer one with its
    transactional id is closed after the replacement registered: its close must not fence
    the id again (the replacement's registration aborted its transaction already), so the
    replacement commits; a read_committed reader sees only what the replacement wrote.
    """
    topic, config, txn_id = _setting(kafka_bootstrap, unique_name, "replaced")
    old = ConfluentProducer(config, transactional_id=txn_id)
    old.begin_transaction()
    old.publish(topic, b"aborted", key=b"k")
    with pytest.raises(TransactionError) as hung:  # the transport's bound, outlived
        old._transaction_call(lambda: time.sleep(8.0), "send_offsets_to_transaction", 0.1)
    assert hung.value.hung
    newer = ConfluentProducer(config, transactional_id=txn_id)
    try:
        old.close()
        newer.begin_transaction()
        newer.publish(topic, b"committed", key=b"k")
        newer.commit_transaction(10.0)
    finally:
        newer.close()
    assert _read_committed(kafka_bootstrap, topic) == [b"committed"]


def _read_committed(bootstrap: str, topic: str) -> list[bytes]:
    """Return what a read_committed consumer reads of ``topic`` (up to its end, 30 s at most)."""
    transport = open_transport("confluent", bootstrap=bootstrap)
    consumer = transport.consumer(f"reader-{time.monotonic_ns()}", from_beginning=True)
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while not values and time.monotonic() < deadline:
            values.extend(r.value or b"" for r in consumer.poll(100, 0.5))
        values.extend(r.value or b"" for r in consumer.poll(100, 0.5))
    finally:
        consumer.close()
    return values


def _setting(
    bootstrap: str, unique_name: Callable[[str], str], prefix: str
) -> tuple[str, KafkaConfig, str]:
    """Return a new topic (created), the broker's config and a new transactional id."""
    topic = unique_name(prefix)
    open_transport("confluent", bootstrap=bootstrap).create_topics([topic])
    return topic, KafkaConfig(bootstrap_servers=bootstrap), unique_name("txn")
