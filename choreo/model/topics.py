"""Topic names: which topic carries an event type, and where a service's dead letters go.

By default each event type has its own topic named after the type's Avro full name
(``shop.orders.OrderCreated``), which is a legal Kafka topic name, so a service subscribes
exactly to what it consumes. A :data:`TopicNaming` callable in
:class:`~choreo.runtime.config.WorkerConfig` overrides it. Two wider layouts are provided:
:func:`topic_per_namespace` (one topic per Avro namespace, i.e. per producing service or
bounded context: ``shop.orders``) and :func:`shared_topic` (every event type in one topic,
e.g. one per saga). Several event types can share a topic because every record carries
its event type in the ``choreo-type`` header: a worker subscribed to a shared topic reads
every record in it and skips, without handling, the types it does not consume.

Trade-offs (measured in ``bench/bench_broker_cost.py``, see the operating guide): fewer
topics mean fewer partitions for the broker to append to and serve, but each service
then fetches the records of the types it skips too.
Records a service cannot handle go to its own dead-letter topic,
``choreo.deadletter.<service>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from choreo.errors import ConfigurationError

__all__ = [
    "DEADLETTER_TOPIC",
    "DeadLetterNaming",
    "TopicNaming",
    "deadletter_topic",
    "shared_topic",
    "topic_for",
    "topic_per_namespace",
]

TopicNaming = Callable[[str], str]
"""Maps an event type (Avro full name) to the topic that carries it."""

DeadLetterNaming = Callable[[str], str]
"""Maps a service name to its dead-letter topic."""

_LEGAL_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")

DEADLETTER_TOPIC: Final = "choreo.deadletter"
"""Prefix of the dead-letter topics: one per service, ``choreo.deadletter.<service>``."""


def topic_for(event_type: str) -> str:
    """Return the default topic of ``event_type``: the event type's full name itself."""
    return event_type


def deadletter_topic(service: str) -> str:
    """Return the default dead-letter topic of ``service``: ``choreo.deadletter.<service>``."""
    return f"{DEADLETTER_TOPIC}.{service}"


def topic_per_namespace(event_type: str) -> str:
    """Return the topic of ``event_type`` in the per-namespace layout: its Avro namespace.

    ``shop.orders.OrderCreated`` goes to ``shop.orders``, with every other event type of
    that namespace; a type without a namespace keeps a topic of its own (its name).
    """
    namespace, dot, _ = event_type.rpartition(".")
    return namespace if dot and namespace else event_type


def shared_topic(name: str) -> TopicNaming:
    """Return a :data:`TopicNaming` that puts every event type in the topic ``name``.

    Raises :class:`~choreo.errors.ConfigurationError` when ``name`` is not a legal Kafka
    topic name (1 to 249 of ``A-Z a-z 0-9 . _ -``, not ``.`` or ``..``).
    """
    if not _LEGAL_TOPIC.fullmatch(name) or name in (".", ".."):
        raise ConfigurationError(
            f"shared topic {name[:60]!r} is not a legal Kafka topic name"
            " (1 to 249 of A-Z a-z 0-9 . _ -)"
        )

    def naming(event_type: str) -> str:
        return name

    naming.__qualname__ = naming.__name__ = f"shared_topic({name!r})"
    return naming
