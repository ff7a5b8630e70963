"""A cluster that refuses to describe a topic's configs: the check says it was not made.

On a broker of its own with Kafka's ACL authorizer, where every principal may do
everything except ``DescribeConfigs`` on one topic (a DENY ACL). confluent-kafka reports
the refusal as an error; kafka-python's ``describe_configs`` drops it and answers with no
configs, which must not read as "nothing short" (the min.insync.replicas asked for would
go unchecked without a word).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from choreo.transports.existing_topics import check_existing, read_confluent, read_kafka_python
from choreo.transports.factory import open_transport
from tests.conftest import load_kafka_broker_module

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

LOGGERS = ("choreo.transports.replication", "choreo.transports.existing_topics")


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A broker of this module's own with the ACL authorizer (allow when no ACL matches)."""
    module = load_kafka_broker_module()

    class AuthorizingBroker(module.KafkaBroker):  # type: ignore[name-defined,misc]
        def server_properties(self) -> str:
            acl = (
                "\nauthorizer.class.name="
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
                "allow.everyone.if.no.acl.found=true\n"
            )
            return str(super().server_properties()) + acl

    instance = AuthorizingBroker(port=0).start()
    try:
        yield str(instance.bootstrap)
    finally:
        instance.stop()


def _refused_topic(bootstrap: str) -> str:
    """Create a topic (RF 1, min.insync.replicas 1) whose configs nobody may describe."""
    topic = f"acl-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    # any ACL on the topic ends "allow when none is found" for it: allow all, deny one
    acls = [
        AclBinding(
            ResourceType.TOPIC,
            topic,
            ResourcePatternType.LITERAL,
            "User:*",
            "*",
            operation,
            permission,
        )
        for operation, permission in (
            (AclOperation.ALL, AclPermissionType.ALLOW),
            (AclOperation.DESCRIBE_CONFIGS, AclPermissionType.DENY),
        )
    ]
    for future in admin.create_acls(acls).values():
        future.result(30)
    # the ACL reaches the broker's authorizer with the metadata log: wait until it refuses
    deadline = time.monotonic() + 30
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    while True:
        try:
            admin.describe_configs([resource])[resource].result(10)
        except KafkaException:
            return topic
        assert time.monotonic() < deadline, "the DENY ACL never took effect"
        time.sleep(0.1)


@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_configs_refused_is_the_warning_that_the_check_was_not_made(
    bootstrap: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """min.insync.replicas 2 asked of a topic whose configs are refused: one WARNING saying
    the comparison was not made (before, with kafka-python: nothing at all)."""
    topic = _refused_topic(bootstrap)
    caplog.set_level(logging.WARNING, logger="choreo.transports")
    if kind == "confluent":
        admin = AdminClient({"bootstrap.servers": bootstrap})
        warned = check_existing(lambda: read_confluent(admin, [topic], 10), [topic], None, 2)
    else:
        transport = open_transport(kind, bootstrap=bootstrap)
        python_admin = transport._admin()  # type: ignore[attr-defined]
        try:
            warned = check_existing(
                lambda: read_kafka_python(python_admin, [topic]), [topic], None, 2
            )
        finally:
            python_admin.close()
            transport.close()
    assert warned == 0
    lines = [
        r.getMessage() for r in caplog.records if r.name in LOGGERS and r.levelno >= logging.WARNING
    ]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cannot compare the replication of existing topic(s) {topic} ")
