"""Open a transport by name: ``memory``, ``confluent`` or ``kafka-python``.

The Kafka transports are imported only when asked for, so the memory transport works
without touching a Kafka client.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from choreo.errors import ConfigurationError
from choreo.transports.base import Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.memory import MemoryBus, MemoryTransport

__all__ = ["TRANSPORT_KINDS", "open_transport"]

TRANSPORT_KINDS: Final = ("memory", "confluent", "kafka-python")
"""The names :func:`open_transport` accepts."""


def open_transport(
    kind: str = "memory",
    *,
    bootstrap: str | None = None,
    bus: MemoryBus | None = None,
    config: KafkaConfig | None = None,
) -> Transport:
    """Return a transport of ``kind``; Kafka kinds need ``config`` or ``bootstrap``.

    ``memory`` uses ``bus`` (a new :class:`MemoryBus` when None). ``confluent`` and
    ``kafka-python`` use ``config``, or a default :class:`KafkaConfig` for
    ``bootstrap``; when both are given, ``bootstrap`` replaces the config's servers.
    Raises :class:`~choreo.errors.ConfigurationError` for an unknown kind, a Kafka
    kind without an address, or memory options given to a Kafka kind (and vice versa).
    """
    if kind not in TRANSPORT_KINDS:
        raise ConfigurationError(
            f"unknown transport {kind!r}: choose one of {', '.join(TRANSPORT_KINDS)}"
        )
    if kind == "memory":
        if bootstrap is not None or config is not None:
            raise ConfigurationError("the memory transport takes no bootstrap or Kafka config")
        return MemoryTransport(bus)
    if bus is not None:
        raise ConfigurationError(f"the {kind} transport takes no memory bus")
    kafka_config = _kafka_config(kind, bootstrap, config)
    if kind == "confluent":
        from choreo.transports.confluent import ConfluentTransport

        return ConfluentTransport(kafka_config)
    from choreo.transports.kafka_python import KafkaPythonTransport

    return KafkaPythonTransport(kafka_config)


def _kafka_config(kind: str, bootstrap: str | None, config: KafkaConfig | None) -> KafkaConfig:
    """Return the Kafka configuration for ``kind`` from a config and/or a bootstrap address."""
    if config is None:
        if not bootstrap:
            raise ConfigurationError(
                f"the {kind} transport needs bootstrap servers (host:port): pass"
                " bootstrap='host:port' or a KafkaConfig; on the command line give --bootstrap"
                " HOST:PORT, set $CHOREO_KAFKA_BOOTSTRAP, or put bootstrap.servers in the"
                " --config file"
            )
        return KafkaConfig(bootstrap_servers=bootstrap)
    if bootstrap:
        return replace(config, bootstrap_servers=bootstrap)
    return config
