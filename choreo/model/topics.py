"""Topic names: which topic carries an event type, and where a service's dead letters go.

By default each event type has its own topic named after the type's Avro full name
(``shop.orders.OrderCreated``), which is a legal Kafka topic name, so a service subscribes
exactly to what it consumes. A :data:`TopicNaming` callable in
:class:`~choreo.runtime.config.WorkerConfig` overrides it (e.g. one topic per saga).
Records a service cannot handle go to its own dead-letter topic,
``choreo.deadletter.<service>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = [
    "DEADLETTER_TOPIC",
    "DeadLetterNaming",
    "TopicNaming",
    "deadletter_topic",
    "topic_for",
]

TopicNaming = Callable[[str], str]
"""Maps an event type (Avro full name) to the topic that carries it."""

DeadLetterNaming = Callable[[str], str]
"""Maps a service name to its dead-letter topic."""

DEADLETTER_TOPIC: Final = "choreo.deadletter"
"""Prefix of the dead-letter topics: one per service, ``choreo.deadletter.<service>``."""


def topic_for(event_type: str) -> str:
    """Return the default topic of ``event_type``: the event type's full name itself."""
    return event_type


def deadletter_topic(service: str) -> str:
    """Return the default dead-letter topic of ``service``: ``choreo.deadletter.<service>``."""
    return f"{DEADLETTER_TOPIC}.{service}"
