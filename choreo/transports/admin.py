"""Topic administration beyond the :class:`~choreo.transports.base.Transport` protocol.

What the tracker group (:mod:`choreo.tracker.group`) needs and the protocol does not
offer: creating a *compacted* topic (replicated as the services' topics are, when
asked), a topic's partition count, and a transport whose consumers use Kafka's
``range`` assignor (which gives every member the same partition numbers of every topic
when the topics have equal partition counts, so the partitions of one correlation id
stay together). Each function knows the three shipped transports; another transport
gets the closest thing the protocol allows (a plain topic, no count, the transport
unchanged).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from choreo.errors import ConfigurationError, TransportError
from choreo.transports.base import Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.replication import check_replication, replication_configs

if TYPE_CHECKING:
    from choreo.transports.kafka_python import KafkaPythonTransport

__all__ = ["COMPACTED", "create_compacted_topic", "partition_count", "with_range_assignor"]

logger = logging.getLogger(__name__)

COMPACTED: Final = {"cleanup.policy": "compact"}
"""The topic configuration of a compacted topic (the latest record per key is kept)."""
_TIMEOUT_S: Final = 30.0


def create_compacted_topic(
    transport: Transport,
    topic: str,
    *,
    partitions: int,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> None:
    """Create ``topic`` as a compacted topic of ``partitions`` unless it exists.

    Replication as for the services' topics (:meth:`Transport.create_topics
    <choreo.transports.base.Transport.create_topics>`, :mod:`choreo.transports.replication`):
    ``replication_factor`` None is the cluster's default, ``min_insync_replicas`` becomes
    the topic's config; a cluster with fewer live brokers than either asks for is a
    :class:`~choreo.errors.ConfigurationError` before anything is created, and a topic that
    exists with less replication than asked is left as it is, with a warning. The memory
    transport has no compaction (it keeps every record); a transport other than the three
    gets a plain topic, and a warning says so.
    """
    from choreo.transports.confluent import ConfluentTransport
    from choreo.transports.memory import MemoryTransport

    check_replication(replication_factor, min_insync_replicas)
    if isinstance(transport, ConfluentTransport):
        _create_confluent(transport, topic, partitions, replication_factor, min_insync_replicas)
        return
    kafka_python = _kafka_python(transport)
    if kafka_python is not None:
        kafka_python.create_topics(
            [topic],
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
            configs=COMPACTED,
        )
        return
    if not isinstance(transport, MemoryTransport):
        logger.warning(
            "transport %s cannot set topic configs: %s is created without compaction; "
            "set cleanup.policy=compact on it yourself", transport.name, topic,
        )
    transport.create_topics(
        [topic],
        partitions=partitions,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
    )


def _create_confluent(
    transport: object,
    topic: str,
    partitions: int,
    replication_factor: int | None,
    min_insync_replicas: int | None,
) -> None:
    import confluent_kafka as ck
    from confluent_kafka.cimpl import NewTopic

    from choreo.transports.confluent import ConfluentTransport

    assert isinstance(transport, ConfluentTransport)
    transport._check_brokers([topic], replication_factor, min_insync_replicas)
    admin = transport._admin_client()
    factor = -1 if replication_factor is None else replication_factor
    config = {**COMPACTED, **replication_configs(min_insync_replicas)}
    new = NewTopic(topic, num_partitions=partitions, replication_factor=factor, config=config)
    future = admin.create_topics([new], operation_timeout=_TIMEOUT_S)[topic]
    try:
        future.result(timeout=_TIMEOUT_S)
    except ck.KafkaException as exc:
        error = exc.args[0] if exc.args else None
        code = getattr(error, "code", lambda: None)()
        if code == ck.KafkaError.TOPIC_ALREADY_EXISTS:
            transport._check_existing([topic], replication_factor, min_insync_replicas)
            return
        if code == ck.KafkaError.INVALID_REPLICATION_FACTOR:
            raise ConfigurationError(f"cannot create topic {topic!r}: {exc}") from None
        raise TransportError(f"cannot create topic {topic!r}: {exc}") from exc
    transport._wait_for_metadata([topic])


def partition_count(transport: Transport, topic: str) -> int | None:
    """Return how many partitions ``topic`` has; None when it does not exist or is unknown."""
    from choreo.transports.confluent import ConfluentTransport
    from choreo.transports.memory import MemoryTransport

    if isinstance(transport, MemoryTransport):
        return transport.bus.partitions(topic) or None
    if isinstance(transport, ConfluentTransport):
        import confluent_kafka as ck

        try:
            # every topic's metadata: asking for one by name would create it on a broker
            # with auto.create.topics.enable (with the default partition count)
            metadata = transport._admin_client().list_topics(timeout=_TIMEOUT_S)
        except ck.KafkaException as exc:
            raise TransportError(f"cannot read the metadata of {topic!r}: {exc}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return len(found.partitions)
    kafka_python = _kafka_python(transport)
    return None if kafka_python is None else kafka_python.partition_count(topic)


def with_range_assignor(
    transport: Transport, *, fetch_bytes: int | None = None, prefetch_kbytes: int | None = None
) -> Transport:
    """Return a transport like ``transport`` whose consumers use the ``range`` assignor.

    ``fetch_bytes``, when given, is the consumers' ``max.partition.fetch.bytes`` unless
    the configuration sets one: a smaller fetch per partition interleaves the partitions
    (topics) more finely in what a poll returns. ``prefetch_kbytes``, when given, bounds
    what the confluent client fetches ahead of the application
    (``queued.max.messages.kbytes``, unless configured), so pausing a partition stops it
    soon. The memory transport assigns with ``range`` by default and is returned as it is.
    """
    from choreo.transports.confluent import ConfluentTransport

    if isinstance(transport, ConfluentTransport):
        config = _ranged(transport.config, fetch_bytes)
        if prefetch_kbytes is not None:
            queued = {"queued.max.messages.kbytes": prefetch_kbytes}
            config = replace(config, consumer={**queued, **config.consumer})
        return ConfluentTransport(config)
    kafka_python = _kafka_python(transport)
    if kafka_python is None:
        return transport
    return type(kafka_python)(_ranged(kafka_python.config, fetch_bytes))


def _kafka_python(transport: Transport) -> KafkaPythonTransport | None:
    """Return ``transport`` when it is the kafka-python one (None too when not installed)."""
    try:
        from choreo.transports.kafka_python import KafkaPythonTransport
    except ImportError:  # kafka-python is optional
        return None
    return transport if isinstance(transport, KafkaPythonTransport) else None


def _ranged(config: KafkaConfig, fetch_bytes: int | None) -> KafkaConfig:
    """Return ``config`` with the ``range`` assignor (and a fetch size) for its consumers."""
    fetch = {} if fetch_bytes is None else {"max.partition.fetch.bytes": fetch_bytes}
    consumer = {**fetch, **config.consumer, "partition.assignment.strategy": "range"}
    return replace(config, consumer=consumer)
