"""open_transport: choosing a transport by name, and the package's exported names."""

from __future__ import annotations

import pytest

import choreo.transports
from choreo.errors import ConfigurationError
from choreo.transports import KafkaConfig, MemoryBus, MemoryTransport, Transport, open_transport
from choreo.transports.confluent import ConfluentTransport
from choreo.transports.kafka_python import KafkaPythonTransport


def test_memory_is_the_default_and_uses_the_given_bus() -> None:
    """open_transport() is a memory transport; a given bus is shared."""
    bus = MemoryBus()
    transport = open_transport(bus=bus)
    assert isinstance(transport, MemoryTransport) and transport.bus is bus
    assert isinstance(open_transport(), Transport)


@pytest.mark.parametrize(
    ("kind", "cls"), [("confluent", ConfluentTransport), ("kafka-python", KafkaPythonTransport)]
)
def test_kafka_kinds_build_from_a_bootstrap_address(kind: str, cls: type) -> None:
    """A Kafka kind with a bootstrap address gets a default config for that address."""
    transport = open_transport(kind, bootstrap="127.0.0.1:9092")
    assert isinstance(transport, (ConfluentTransport, KafkaPythonTransport))
    assert isinstance(transport, cls) and transport.name == kind
    assert transport.config.bootstrap_servers == "127.0.0.1:9092"


def test_bootstrap_replaces_the_servers_of_a_given_config() -> None:
    """With both a config and a bootstrap address, the address wins and the rest is kept."""
    config = KafkaConfig(bootstrap_servers="old:9092", client_id="svc")
    transport = open_transport("confluent", bootstrap="new:9092", config=config)
    assert isinstance(transport, ConfluentTransport)
    assert transport.config.bootstrap_servers == "new:9092"
    assert transport.config.client_id == "svc"


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("rabbitmq", {}),
        ("confluent", {}),
        ("kafka-python", {"bootstrap": ""}),
        ("memory", {"bootstrap": "b:9092"}),
        ("confluent", {"bootstrap": "b:9092", "bus": MemoryBus()}),
    ],
)
def test_bad_requests_are_configuration_errors(kind: str, options: dict[str, object]) -> None:
    """Unknown kinds, Kafka kinds without an address and mixed options are refused."""
    with pytest.raises(ConfigurationError):
        open_transport(kind, **options)  # type: ignore[arg-type]


def test_exported_names_are_pinned() -> None:
    """The package exports exactly the documented names."""
    assert sorted(choreo.transports.__all__) == sorted(
        [
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
    )
