"""Removing a static member from its consumer group: a clean hand-over of its partitions.

A static member (``group.instance.id``, KIP-345) sends no LeaveGroup when its client
closes, so that a restart with the same instance id gets its partitions back without a
rebalance; a member that is not coming back holds its partitions until
``session.timeout.ms`` (45 s by default) expires. :func:`remove_static_member` asks the
group coordinator to remove it at once, as the Java admin's
``removeMembersFromConsumerGroup`` does (a batched LeaveGroup request, v3+, Kafka 2.4+);
the coordinator rebalances and the other members get its partitions immediately. Both
Kafka transports use it when a consumer is closed with ``leave_group=True``; it talks to
the broker through kafka-python's admin client, whichever transport the consumer is on.
"""

from __future__ import annotations

import logging

import kafka.errors as kerr
from kafka.admin import KafkaAdminClient, MemberToRemove

from choreo.errors import TransportError
from choreo.transports.config import KafkaConfig, to_kafka_python
from choreo.transports.kafka_python_build import build

__all__ = ["remove_static_member"]

logger = logging.getLogger(__name__)


def remove_static_member(config: KafkaConfig, group_id: str, instance_id: str) -> None:
    """Remove the static member ``instance_id`` from ``group_id`` now.

    Raises :class:`~choreo.errors.TransportError` when the coordinator cannot be reached
    or refuses; a member the group no longer knows (``UNKNOWN_MEMBER_ID``) is not an
    error: it is gone already.
    """
    settings = {
        key: value
        for key, value in to_kafka_python(config.common_settings()).items()
        if key in KafkaAdminClient.DEFAULT_CONFIG
    }
    try:
        admin = build(KafkaAdminClient, settings)
    except kerr.KafkaError as exc:
        raise TransportError(f"cannot connect admin client: {exc}", retriable=True) from exc
    try:
        results = admin.remove_group_members(
            group_id, [MemberToRemove(group_instance_id=instance_id, reason="clean stop")]
        )
    except kerr.KafkaError as exc:
        raise TransportError(
            f"cannot remove {instance_id!r} from group {group_id!r}: {exc}",
            retriable=bool(getattr(exc, "retriable", False)),
        ) from exc
    finally:
        admin.close()
    for error in results.values():
        if error is kerr.NoError or error is kerr.UnknownMemberIdError:
            continue
        raise TransportError(f"cannot remove {instance_id!r} from group {group_id!r}: {error}")
    logger.info("static member %s left group %s", instance_id, group_id)
