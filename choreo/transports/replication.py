"""The replication of the topics choreo creates: the factor, ``min.insync.replicas``, checks.

A topic choreo creates gets the cluster's ``default.replication.factor`` unless a
replication factor is asked for (``WorkerConfig.topic_replication_factor``, ``choreo run
--replication-factor``); ``min.insync.replicas`` (how many replicas must have a record
before an ``acks=all`` producer, as choreo's are, counts it as written) becomes a topic
config when asked for, the broker's default otherwise. Both Kafka transports check the
request against the cluster before creating anything: a factor larger than the number of
live brokers, or a ``min.insync.replicas`` that the factor (or the brokers) can never
satisfy, is a :class:`~choreo.errors.ConfigurationError` saying so, never a half-created
set of topics. The live brokers are counted only when a topic is to be created: with
every topic there, a broker down (a rolling restart of the cluster) never stops a
replica's start.

Topics that exist are left as they are: choreo never moves partitions or alters the
configs of a topic it did not just create. When replication was asked for and a topic
already exists with less (fewer replicas, a lower ``min.insync.replicas``, or too few
replicas for the ``min.insync.replicas`` asked), one WARNING per such topic says what it
has, what was asked and the two commands that fix it (:func:`warn_shortfalls`). A warning
and not an error: the topic holds the service's records and keeps working as it is, a
refusal would turn every restart of every replica into an outage until an operator has
moved the partitions (which copies data and takes time), and the topic may be shared
with services, or managed by tools, that choreo must not override.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from choreo.errors import ConfigurationError
from choreo.safety.text import printable

__all__ = [
    "MAX_REPLICATION_FACTOR",
    "ExistingReplication",
    "check_brokers",
    "check_replication",
    "replication_configs",
    "shortfall",
    "warn_shortfalls",
]

logger = logging.getLogger(__name__)

_MAX_TOPIC_CHARS: Final = 249
"""Kafka's longest topic name; a name shown in a warning is cut there (and escaped)."""

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


@dataclass(frozen=True, slots=True)
class ExistingReplication:
    """The replication an existing topic has, as read from the cluster.

    ``replication_factor`` is the smallest replica count among its partitions;
    ``min_insync_replicas`` its effective ``min.insync.replicas`` (its own or the broker's
    default), None when it could not be read.
    """

    topic: str
    replication_factor: int
    min_insync_replicas: int | None


def shortfall(
    found: ExistingReplication, replication_factor: int | None, min_insync_replicas: int | None
) -> str | None:
    """Return the warning for an existing topic with less replication than asked; None if not.

    Short means: fewer replicas than ``replication_factor``, fewer replicas than
    ``min_insync_replicas`` (no write could succeed once that is set), or a lower
    ``min.insync.replicas``. More than asked is never short.
    """
    needed = replication_factor if replication_factor is not None else min_insync_replicas
    few_replicas = needed is not None and found.replication_factor < needed
    low_insync = (
        min_insync_replicas is not None
        and found.min_insync_replicas is not None
        and found.min_insync_replicas < min_insync_replicas
    )
    if not few_replicas and not low_insync:
        return None
    name = printable(found.topic, _MAX_TOPIC_CHARS)
    has = f"replication factor {found.replication_factor}"
    if found.min_insync_replicas is not None:
        has += f" and min.insync.replicas {found.min_insync_replicas}"
    asked = []
    if replication_factor is not None:
        asked.append(f"replication factor {replication_factor}")
    if min_insync_replicas is not None:
        asked.append(f"min.insync.replicas {min_insync_replicas}")
    fixes = []
    if few_replicas:
        fixes.append(
            f"raise its replication factor to {needed} with kafka-reassign-partitions.sh "
            f"--execute (a reassignment listing {needed} brokers for each partition)"
        )
    if low_insync:
        fixes.append(
            f"set kafka-configs.sh --alter --entity-type topics --entity-name '{name}' "
            f"--add-config min.insync.replicas={min_insync_replicas}"
        )
    return (
        f"topic '{name}' already exists with {has}, less than asked "
        f"({', '.join(asked)}); existing topics are left as they are: "
        f"{', then '.join(fixes)}"
    )


def warn_shortfalls(
    found: Iterable[ExistingReplication],
    replication_factor: int | None,
    min_insync_replicas: int | None,
) -> int:
    """Log one WARNING per topic of ``found`` with less replication than asked; return how many."""
    warned = 0
    for topic in found:
        message = shortfall(topic, replication_factor, min_insync_replicas)
        if message is not None:
            logger.warning("%s", message)
            warned += 1
    return warned
