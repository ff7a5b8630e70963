"""Client settings that keep the Kafka contract runs short (librdkafka names)."""

from __future__ import annotations

from choreo.transports.config import KafkaConfig

FAST_CONSUMER = {
    "session.timeout.ms": 6000,  # the broker's group.min.session.timeout.ms
    "heartbeat.interval.ms": 300,  # members learn about a rebalance quickly
    "topic.metadata.refresh.interval.ms": 1000,  # regex subscriptions see new topics soon
    "fetch.wait.max.ms": 100,
}


def fast_config(bootstrap: str) -> KafkaConfig:
    """Return a config for ``bootstrap`` with the fast consumer settings above."""
    return KafkaConfig(
        bootstrap_servers=bootstrap, client_id="choreo-tests", consumer=FAST_CONSUMER
    )
