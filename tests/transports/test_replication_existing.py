"""An existing topic with less replication than asked: one WARNING saying what it has and the fix.

Pure checks of the message (:func:`choreo.transports.replication.shortfall`), and on the
session's single real broker: what both Kafka transports read of an existing topic's
replication, no warning when it has what is asked, and the warning when the same real
values are compared with more than they have. (Asking ``create_topics`` for more than one
broker can hold, with a topic to create, is refused before anything is read:
``tests/runtime/test_run_replication.py``; the three-broker cluster test,
``tests/chaos/test_replication_cluster.py``, shows the warning through ``create_topics``
and ``choreo run``.)
"""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from choreo.transports.existing_topics import check_existing, read_confluent, read_kafka_python
from choreo.transports.factory import open_transport
from choreo.transports.replication import ExistingReplication, shortfall

LOGGERS = ("choreo.transports.replication", "choreo.transports.existing_topics")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name in LOGGERS and r.levelno >= logging.WARNING
    ]


def test_the_warning_says_what_the_topic_has_what_was_asked_and_both_fixes() -> None:
    """Fewer replicas and a lower min.insync.replicas: one line, reassignment first."""
    message = shortfall(ExistingReplication("shop.orders", 1, 1), 3, 2)
    assert message == (
        "topic 'shop.orders' already exists with replication factor 1 and min.insync.replicas "
        "1, less than asked (replication factor 3, min.insync.replicas 2); existing topics are "
        "left as they are: raise its replication factor to 3 with kafka-reassign-partitions.sh "
        "--execute (a reassignment listing 3 brokers for each partition), then set "
        "kafka-configs.sh --alter --entity-type topics --entity-name 'shop.orders' "
        "--add-config min.insync.replicas=2"
    )


def test_only_what_is_short_is_said_and_more_than_asked_is_fine() -> None:
    """Each shortfall alone; as much or more than asked, or nothing asked: no warning."""
    only_insync = shortfall(ExistingReplication("t", 3, 1), 3, 2)
    assert only_insync is not None
    assert "kafka-configs.sh" in only_insync and "reassign" not in only_insync
    only_replicas = shortfall(ExistingReplication("t", 1, 1), 3, None)
    assert only_replicas is not None
    assert "reassign" in only_replicas and "kafka-configs" not in only_replicas
    # min.insync.replicas 2 asked alone, on a topic of one replica: no write could succeed
    too_few = shortfall(ExistingReplication("t", 1, 2), None, 2)
    assert too_few is not None and "raise its replication factor to 2" in too_few
    assert shortfall(ExistingReplication("t", 3, 2), 3, 2) is None
    assert shortfall(ExistingReplication("t", 5, 3), 3, 2) is None
    assert shortfall(ExistingReplication("t", 1, 1), None, None) is None
    assert shortfall(ExistingReplication("t", 3, None), 3, 2) is None  # unknown: not guessed


def test_a_hostile_topic_name_is_escaped_and_bounded() -> None:
    """Control characters become escapes; a name longer than Kafka allows is cut."""
    message = shortfall(ExistingReplication("evil\x1b[31m\u202e" + "x" * 400, 1, 1), 3, None)
    assert message is not None
    assert "\x1b" not in message and "\u202e" not in message
    assert "\\x1b[31m\\u202e" in message
    assert "(+" in message and len(message) < 700


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_an_existing_topic_with_what_is_asked_draws_no_warning(
    kafka_bootstrap: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RF 1 with min.insync.replicas 1 exists, RF 1 / 1 asked again: read right, nothing said."""
    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    prefix = f"exist{uuid.uuid4().hex[:8]}."
    try:
        transport.create_topics([f"{prefix}a"], replication_factor=1, min_insync_replicas=1)
        caplog.set_level(logging.DEBUG, logger="choreo.transports")
        transport.create_topics(
            [f"{prefix}a", f"{prefix}b"], replication_factor=1, min_insync_replicas=1
        )
        assert _warnings(caplog) == []
    finally:
        transport.close()


@pytest.mark.kafka
def test_the_real_values_compared_with_more_give_one_warning_per_topic(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What both clients read of real topics, compared with RF 2 / min.insync 2: one line each."""
    prefix = f"exist{uuid.uuid4().hex[:8]}."
    names = [f"{prefix}a", f"{prefix}b"]
    open_transport("confluent", bootstrap=kafka_bootstrap).create_topics(names, partitions=2)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    confluent = read_confluent(admin, [*names, f"{prefix}missing"], 10)
    assert confluent == [ExistingReplication(name, 1, 1) for name in names]
    python_transport = open_transport("kafka-python", bootstrap=kafka_bootstrap)
    python_admin = python_transport._admin()  # type: ignore[attr-defined]
    try:
        assert read_kafka_python(python_admin, names) == confluent
    finally:
        python_admin.close()
    caplog.set_level(logging.WARNING, logger="choreo.transports")
    warned = check_existing(lambda: read_confluent(admin, names, 10), names, 2, 2)
    assert warned == 2
    lines = _warnings(caplog)
    assert len(lines) == 2
    assert all("with replication factor 1 and min.insync.replicas 1" in line for line in lines)
    assert [name for name in names if any(f"topic '{name}'" in line for line in lines)] == names


def test_a_cluster_that_cannot_be_read_is_one_warning_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A describe that fails: the check says it was not made; creating carried on."""
    from choreo.errors import TransportError

    def refuse() -> list[ExistingReplication]:
        raise TransportError("cannot describe the topics: TOPIC_AUTHORIZATION_FAILED")

    caplog.set_level(logging.WARNING, logger="choreo.transports")
    topics = [f"t{n}" for n in range(8)]
    assert check_existing(refuse, topics, 3, 2) == 0
    assert _warnings(caplog) == [
        "cannot compare the replication of existing topic(s) t0, t1, t2, t3, t4 and 3 more "
        "with what was asked: cannot describe the topics: TOPIC_AUTHORIZATION_FAILED"
    ]
    assert check_existing(refuse, topics, None, None) == 0  # nothing asked: nothing read
