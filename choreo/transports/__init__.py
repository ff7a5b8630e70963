"""Transports: the only modules that import a Kafka client.

``memory`` (in-process, the embedded default), ``confluent`` (confluent-kafka, the fast
default for Kafka) and ``kafka_python`` (pure Python). See :mod:`choreo.transports.base`.
"""

from choreo.transports.base import Consumer, Producer, Record, TopicPartition, Transport

__all__ = ["Consumer", "Producer", "Record", "TopicPartition", "Transport"]
