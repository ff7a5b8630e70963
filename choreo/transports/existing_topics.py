"""Read the replication of topics that already exist, and warn when it is less than asked.

``create_topics`` on either Kafka transport leaves an existing topic as it is. When a
replication factor or ``min.insync.replicas`` was asked for, the topics the broker
reported as existing are read here (their partitions' replica counts from the metadata,
their effective ``min.insync.replicas`` from DescribeConfigs) and each one with less than
asked gets one WARNING (:func:`~choreo.transports.replication.warn_shortfalls`). Nothing
is read when no replication was asked for. A cluster that will not describe them (no
``DescribeConfigs`` permission, a timeout) costs one WARNING saying the check was not
made, never a failed start: the topics exist and work as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from choreo.errors import TransportError
from choreo.safety.text import printable
from choreo.transports.replication import ExistingReplication, warn_shortfalls

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from kafka.admin import KafkaAdminClient

__all__ = ["check_existing", "read_confluent", "read_kafka_python"]

logger = logging.getLogger(__name__)

_MIN_INSYNC: Final = "min.insync.replicas"
_NAMED: Final = 5
"""Topics named in the warning that the check could not be made (the rest are counted)."""


def check_existing(
    read: Callable[[], list[ExistingReplication]],
    topics: Sequence[str],
    replication_factor: int | None,
    min_insync_replicas: int | None,
) -> int:
    """Warn once per existing topic with less replication than asked; return how many.

    ``read`` reads ``topics`` from the cluster; a :class:`~choreo.errors.TransportError`
    from it is one WARNING (the check was not made), and 0 is returned.
    """
    if not topics or (replication_factor is None and min_insync_replicas is None):
        return 0
    try:
        found = read()
    except TransportError as exc:
        named = ", ".join(printable(t, 249) for t in topics[:_NAMED])
        more = f" and {len(topics) - _NAMED} more" if len(topics) > _NAMED else ""
        logger.warning(
            "cannot compare the replication of existing topic(s) %s%s with what was asked: %s",
            named, more, exc,
        )
        return 0
    return warn_shortfalls(found, replication_factor, min_insync_replicas)


def _min_insync(value: object) -> int | None:
    """Return a ``min.insync.replicas`` value as an int; None when it is not one."""
    try:
        return int(str(value))
    except ValueError:
        return None


def read_confluent(
    admin: AdminClient, topics: Sequence[str], timeout: float
) -> list[ExistingReplication]:
    """Return the replication of ``topics`` that exist, read with confluent-kafka's admin client."""
    import confluent_kafka as ck
    from confluent_kafka.admin._config import ConfigResource

    try:
        # every topic's metadata: asking for one by name could create it (auto.create)
        metadata = admin.list_topics(timeout=timeout)
        present = [t for t in topics if t in metadata.topics and metadata.topics[t].partitions]
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in present]
        futures = admin.describe_configs(resources, request_timeout=timeout) if resources else {}
        configs = {res.name: future.result(timeout=timeout) for res, future in futures.items()}
    except ck.KafkaException as exc:
        raise TransportError(f"cannot describe the topics: {exc}") from exc
    found = []
    for topic in present:
        replicas = min(len(p.replicas) for p in metadata.topics[topic].partitions.values())
        entry = configs.get(topic, {}).get(_MIN_INSYNC)
        insync = None if entry is None else _min_insync(entry.value)
        found.append(ExistingReplication(topic, replicas, insync))
    return found


def read_kafka_python(admin: KafkaAdminClient, topics: Sequence[str]) -> list[ExistingReplication]:
    """Return the replication of ``topics`` that exist, read with kafka-python's admin client."""
    import kafka.errors as kerr
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        described: list[dict[str, Any]] = admin.describe_topics(list(topics))
        present = {
            t["name"]: t["partitions"]
            for t in described
            if t.get("error_code", 0) == 0 and t.get("partitions")
        }
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in present]
        configs = admin.describe_configs(resources, config_filter="all") if resources else {}
    except (kerr.KafkaError, KeyError, TypeError) as exc:
        raise TransportError(f"cannot describe the topics: {exc}") from exc
    by_topic = configs.get("topic", {}) if isinstance(configs, dict) else {}
    # kafka-python drops a resource's error (no DescribeConfigs permission on the topic):
    # it comes back without configs, where the filter "all" always gives this one
    refused = [t for t in present if _MIN_INSYNC not in by_topic.get(t, {})]
    if refused:
        named = ", ".join(printable(t, 249) for t in refused[:_NAMED])
        more = f" and {len(refused) - _NAMED} more" if len(refused) > _NAMED else ""
        raise TransportError(f"cannot describe the configs of topic(s) {named}{more}")
    found = []
    for topic in topics:
        partitions = present.get(topic)
        if not partitions:
            continue
        replicas = min(len(p.get("replica_nodes", ())) for p in partitions)
        entry = by_topic.get(topic, {}).get(_MIN_INSYNC)
        insync = None if not isinstance(entry, dict) else _min_insync(entry.get("value"))
        found.append(ExistingReplication(topic, replicas, insync))
    return found
