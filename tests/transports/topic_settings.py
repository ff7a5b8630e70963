"""Read a topic's replication and cleanup policy from a real cluster (test helper)."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource


def topic_settings(bootstrap: str, topic: str) -> tuple[int, str, str] | None:
    """Return (replicas of every partition, min.insync.replicas, cleanup.policy) of ``topic``.

    None when the topic does not exist (or its broker does not describe it yet); the
    partitions must agree on their replica count.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    found = admin.list_topics(timeout=10).topics.get(topic)
    if found is None or not found.partitions:
        return None
    replicas = {len(p.replicas) for p in found.partitions.values()}
    assert len(replicas) == 1, replicas
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(10)
    except KafkaException:  # listed by one broker, not yet known to the one asked
        return None
    return (
        replicas.pop(),
        configs["min.insync.replicas"].value,
        configs["cleanup.policy"].value,
    )
