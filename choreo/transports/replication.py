"""The replication of the topics choreo creates: the factor, ``min.insync.replicas``, checks.

A topic choreo creates gets the cluster's ``default.replication.factor`` unless a
replication factor is asked for (``WorkerConfig.topic_replication_factor``, ``choreo run
--replication-factor``); ``min.insync.replicas`` (how many replicas must have a record
before an ``acks=all`` producer, as choreo's are, counts it as written) becomes a topic
config when asked for, the broker's default otherwise. Both Kafka transports check the
request against the cluster before creating anything: a factor larger than the number of
live brokers, or a ``min.insync.replicas`` that the factor (or the brokers) can never
satisfy, is a :class:`~choreo.errors.ConfigurationError` saying so, never a half-created
set of topics. Topics that exist are left as they are.
"""

from __future__ import annotations

from typing import Final

from choreo.errors import ConfigurationError

__all__ = [
    "MAX_REPLICATION_FACTOR",
    "check_brokers",
    "check_replication",
    "replication_configs",
]

MAX_REPLICATION_FACTOR: Final = 32767
"""The largest replication factor Kafka's CreateTopics request can carry (an int16)."""


def check_replication(replication_factor: int | None, min_insync_replicas: int | None) -> None:
    """Raise ConfigurationError unless both values are None or within Kafka's bounds.

    The factor is 1 to :data:`MAX_REPLICATION_FACTOR`; ``min.insync.replicas`` is at
    least 1 and at most the factor (when one is given): more could never be in sync, and
    every write would fail with ``NOT_ENOUGH_REPLICAS``.
    """
    if replication_factor is not None and not 1 <= replication_factor <= MAX_REPLICATION_FACTOR:
        raise ConfigurationError(
            f"replication factor {replication_factor} is out of range: give 1 to "
            f"{MAX_REPLICATION_FACTOR} (or none for the cluster's default.replication.factor)"
        )
    if min_insync_replicas is None:
        return
    if min_insync_replicas < 1:
        raise ConfigurationError(f"min.insync.replicas {min_insync_replicas} must be at least 1")
    if replication_factor is not None and min_insync_replicas > replication_factor:
        raise ConfigurationError(
            f"min.insync.replicas {min_insync_replicas} is larger than the replication factor "
            f"{replication_factor}: no write could ever succeed; give at most "
            f"{replication_factor} (a factor of 3 with min.insync.replicas 2 is usual)"
        )


def check_brokers(
    brokers: int, replication_factor: int | None, min_insync_replicas: int | None
) -> None:
    """Raise ConfigurationError when a cluster of ``brokers`` live brokers cannot hold the request.

    A replication factor needs that many brokers; ``min.insync.replicas`` with the
    cluster's default factor needs at least that many brokers too.
    """
    if replication_factor is not None and replication_factor > brokers:
        raise ConfigurationError(
            f"replication factor {replication_factor} needs at least {replication_factor} "
            f"brokers, and the cluster has {brokers} live: give --replication-factor "
            f"{min(brokers, replication_factor)} or less (CHOREO_TOPIC_REPLICATION_FACTOR), "
            "or add brokers; no topic was created"
        )
    if min_insync_replicas is not None and min_insync_replicas > brokers:
        raise ConfigurationError(
            f"min.insync.replicas {min_insync_replicas} needs at least {min_insync_replicas} "
            f"brokers, and the cluster has {brokers} live: no write could ever succeed; "
            "no topic was created"
        )


def replication_configs(min_insync_replicas: int | None) -> dict[str, str]:
    """Return the topic configs of a created topic: ``min.insync.replicas`` when asked for."""
    if min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(min_insync_replicas)}
