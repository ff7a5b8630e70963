"""A three-node cluster loses its partitions' leader mid-write and keeps every record once."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from types import ModuleType

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import REPO_ROOT, load_kafka_broker_module

from .test_kafka_broker_restart import consume_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def load_cluster_module() -> ModuleType:
    """Import ``scripts/kafka_cluster.py`` as ``kafka_cluster`` (after ``kafka_broker``)."""
    load_kafka_broker_module()
    module = sys.modules.get("kafka_cluster")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(
        "kafka_cluster", REPO_ROOT / "scripts" / "kafka_cluster.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_cluster"] = module
    spec.loader.exec_module(module)
    return module


def test_killing_the_leader_moves_leadership_and_loses_nothing() -> None:
    """Kill the leader of a partition mid-write: a new leader takes over, nothing is lost."""
    module = load_cluster_module()
    cluster = module.KafkaCluster()
    try:
        cluster.start()
        assert len(cluster.bootstrap.split(",")) == 3
        topic = f"failover-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(30)
        described = admin.list_topics(topic, timeout=10).topics[topic]
        assert all(len(p.replicas) == 3 for p in described.partitions.values())

        producer = Producer(
            {"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True}
        )
        failed: list[str] = []

        def send(values: range) -> None:
            for value in values:
                producer.produce(
                    topic,
                    str(value).encode(),
                    partition=value % 3,
                    on_delivery=lambda err, _m: failed.append(str(err)) if err else None,
                )
                producer.poll(0)

        send(range(300))
        assert producer.flush(30) == 0
        victim = cluster.kill_leader_of([(topic, 0)])
        send(range(300, 600))  # written while partition 0 has no leader yet
        moved = cluster.wait_for_leaders([(topic, p) for p in range(3)], avoid=victim)
        assert moved < 60
        assert producer.flush(60) == 0
        assert failed == []

        cluster.restart(victim)
        assert cluster.node(victim).is_running()
        send(range(600, 700))
        assert producer.flush(30) == 0
        seen = consume_all(cluster.bootstrap, topic, 700)
        assert sorted(seen) == list(range(700))
    finally:
        cluster.stop()
    assert all(not node.is_running() for node in cluster.nodes)
