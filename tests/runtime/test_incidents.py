"""How failures read: one line for what a worker rides out, a fatal reason once, librdkafka quiet.

Pure checks on the real exception classes of psycopg and confluent-kafka (the real-server
behaviour is in ``tests/store/test_connection_drop.py`` and
``tests/runtime/test_run_stop_messages.py``).
"""

from __future__ import annotations

import logging

import confluent_kafka as ck
import psycopg
import pytest

from choreo.errors import TransportError
from choreo.runtime.incidents import describe_failure, rolls_back_transaction
from choreo.safety.redact import register_secret
from choreo.store.pg_errors import connection_lost, first_line
from choreo.transports.confluent.client import _fatal_text
from choreo.transports.librdkafka_log import LIBRDKAFKA_LOGGER, LibrdkafkaLog


def _raised_while(handling: BaseException, raised: BaseException) -> BaseException:
    """Return ``raised`` as Python raises it inside an ``except`` of ``handling``."""
    try:
        try:
            raise handling
        except type(handling):
            raise raised from handling
    except type(raised) as exc:
        return exc


def test_a_lost_connection_is_told_from_a_failed_statement() -> None:
    """Class 08 and 57P01-03, or psycopg's OperationalError without SQLSTATE: lost."""
    assert connection_lost(psycopg.errors.AdminShutdown("terminating connection"))
    assert connection_lost(psycopg.errors.ConnectionFailure("no route"))
    assert connection_lost(psycopg.OperationalError("consuming input failed"))
    assert connection_lost(psycopg.InterfaceError("the connection is closed"))
    assert not connection_lost(psycopg.errors.UniqueViolation("duplicate key"))
    assert not connection_lost(psycopg.errors.DeadlockDetected("deadlock"))
    assert not connection_lost(RuntimeError("a bug"))
    assert rolls_back_transaction(psycopg.errors.DeadlockDetected("deadlock"))
    assert not rolls_back_transaction(psycopg.OperationalError("lost"))


def test_the_worker_says_what_happened_in_one_line_or_leaves_a_bug_its_traceback() -> None:
    """First line only, redacted; the earliest loss of the chain; unknown errors: None."""
    secret = "Pw-incidents-42"
    register_secret(secret)
    lost = psycopg.OperationalError(
        f"consuming input failed: server closed the connection ({secret})\n\tThis probably "
        "means the server terminated abnormally"
    )
    line = describe_failure(lost)
    assert line == (
        "the store's database connection was lost (OperationalError: consuming input "
        "failed: server closed the connection (***))"
    )
    assert first_line(lost).count("\n") == 0

    shutdown = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    rollback = _raised_while(shutdown, psycopg.OperationalError("the connection is closed"))
    assert describe_failure(rollback) == (
        "the store's database connection was lost (AdminShutdown: terminating connection "
        "due to administrator command)"
    )
    assert describe_failure(psycopg.errors.SerializationFailure("could not serialize")) == (
        "the database rolled the batch's transaction back (SerializationFailure: could not "
        "serialize)"
    )
    assert describe_failure(TransportError("poll failed: broker down", retriable=True)) == (
        "Kafka error (TransportError: poll failed: broker down)"
    )
    assert describe_failure(TransportError("fenced", fatal=True)) is None
    assert describe_failure(KeyError("order_id")) is None


def test_a_fatal_consumer_error_reads_its_reason_once() -> None:
    """librdkafka's doubled text of a fenced static member comes out once."""
    reason = "Broker: Static consumer fenced by other consumer with same group.instance.id"
    fenced = ck.KafkaError(
        ck.KafkaError._FATAL, f"Fatal error: {reason}: Fatal consumer error: {reason}"
    )
    assert _fatal_text(fenced) == reason
    other = ck.KafkaError(ck.KafkaError.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed")
    assert _fatal_text(other) == "TOPIC_AUTHORIZATION_FAILED: Topic authorization failed"


@pytest.mark.parametrize(
    ("facility", "level", "text", "expected"),
    [
        ("FATAL", logging.CRITICAL, "Fatal error: Broker: Static consumer", logging.DEBUG),
        ("BGQUEUE", logging.INFO, "Purging 1 unserved events", logging.DEBUG),
        ("TXNERR", logging.CRITICAL, "This instance has been fenced by a newer", logging.DEBUG),
        ("TXNERR", logging.ERROR, "Failed to end transaction: timed out", logging.ERROR),
        ("GETPID", logging.WARNING, "Not coordinator: retrying", logging.WARNING),
    ],
)
def test_librdkafka_lines_become_records_restated_ones_at_debug(
    caplog: pytest.LogCaptureFixture, facility: str, level: int, text: str, expected: int
) -> None:
    """What confluent-kafka hands the ``logger`` is one record; what choreo restates, DEBUG."""
    caplog.set_level(logging.DEBUG, logger=LIBRDKAFKA_LOGGER.name)
    LibrdkafkaLog().log(level, "%s [%s] %s", facility, "choreo#producer-1", text)
    [record] = caplog.records
    assert record.name == "choreo.transports.librdkafka"
    assert record.levelno == expected
    assert record.getMessage() == f"{facility} [choreo#producer-1] {text}"
