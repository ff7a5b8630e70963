"""Refusing to split a service's state: a store that cannot be shared runs one replica only.

A SQLite or memory store lives with one process. A second replica in the same consumer
group would get its own copy of the service's state (and of the inbox), and the two would
oversell, double-charge and re-handle each other's events after a rebalance. So before a
worker joins its group, :func:`refuse_unshared_store` describes the group with the admin
client and raises :class:`~choreo.errors.ConfigurationError` when another member is
alive. A member with the worker's own static instance id is the worker's previous life
(SIGKILLed, not yet expired) and does not count.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from choreo.errors import ConfigurationError
from choreo.store.base import Store
from choreo.transports.librdkafka_log import LIBRDKAFKA_LOG

__all__ = ["GroupMember", "group_members", "refuse_unshared_store"]

logger = logging.getLogger(__name__)

_TIMEOUT = 10.0


class GroupMember(NamedTuple):
    """A live member of a consumer group, as the group coordinator describes it."""

    member_id: str
    instance_id: str | None
    client_id: str
    host: str
    partitions: int
    """How many partitions the member is assigned."""


def group_members(transport: Any, group_id: str) -> list[GroupMember] | None:
    """Return the live members of ``group_id``, or None when the transport cannot tell.

    Kafka transports (their ``config`` gives the client settings) are asked through
    confluent-kafka's admin client; the in-memory bus lives in one process and is not.
    """
    config = getattr(transport, "config", None)
    settings = getattr(config, "common_settings", None)
    if not callable(settings):
        return None
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    client_settings: dict[str, Any] = {**settings(), "logger": LIBRDKAFKA_LOG}
    admin = AdminClient(client_settings)
    try:
        future = admin.describe_consumer_groups([group_id], request_timeout=_TIMEOUT)[group_id]
        description = future.result(timeout=_TIMEOUT)
    finally:
        admin.poll(0)  # serve what the client still holds before it is destroyed
    if description.state in (ConsumerGroupState.DEAD, ConsumerGroupState.EMPTY):
        return []
    return [
        GroupMember(
            m.member_id,
            m.group_instance_id,
            m.client_id,
            m.host,
            len(m.assignment.topic_partitions) if m.assignment else 0,
        )
        for m in description.members
    ]


def _describe_failure(exc: Exception) -> str:
    """Return why describing the group failed, in one line (a timeout has no message)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {_TIMEOUT:.0f} s"
    return f"{type(exc).__name__}: {exc}"


def refuse_unshared_store(
    store: Store, transport: Any, group_id: str, *, instance_id: str | None
) -> None:
    """Raise ConfigurationError if ``store`` is not shared and ``group_id`` has other members.

    Does nothing for a shared store, a store that explicitly allows replicas (a test's
    ``MemoryStore(allow_replicas=True)``), or when the group cannot be described (a
    warning is logged then).
    """
    if store.shared or getattr(store, "allow_replicas", False):
        return
    try:
        members = group_members(transport, group_id)
    except Exception as exc:
        logger.warning(
            "cannot describe consumer group %s (%s): not checked whether another replica "
            "uses it",
            group_id,
            _describe_failure(exc),
        )
        return
    if members is None:
        return
    others = [m for m in members if instance_id is None or m.instance_id != instance_id]
    if not others:
        return
    where = ", ".join(sorted({f"{m.instance_id or m.client_id}@{m.host}" for m in others})[:5])
    raise ConfigurationError(
        f"consumer group {group_id} already has {len(others)} live member(s) ({where}), and "
        f"{store.dialect} store {store!r} cannot be shared: a second replica would hold a "
        "separate copy of the service's state. Use a shared store for several replicas "
        "(choreo run --store postgresql://… or CHOREO_STORE), or stop the other replica."
    )
