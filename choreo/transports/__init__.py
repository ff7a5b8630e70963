"""Transports: the only modules that import a Kafka client.

``memory`` (in-process, the embedded default), ``confluent`` (confluent-kafka, the fast
default for Kafka) and ``kafka_python`` (pure Python). See :mod:`choreo.transports.base`.
The Kafka transports are not imported here: use :func:`open_transport` or import
:mod:`choreo.transports.confluent` / :mod:`choreo.transports.kafka_python` directly.
"""

from choreo.transports.base import Consumer, Producer, Record, TopicPartition, Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import TRANSPORT_KINDS, open_transport
from choreo.transports.memory import MemoryBus, MemoryTransport

__all__ = [
    "TRANSPORT_KINDS",
    "Consumer",
    "KafkaConfig",
    "MemoryBus",
    "MemoryTransport",
    "Producer",
    "Record",
    "TopicPartition",
    "Transport",
    "open_transport",
]
