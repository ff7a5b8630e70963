"""A broker SIGKILLed and restarted on its own data dir keeps every acknowledged record."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import load_kafka_broker_module

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def produce(bootstrap: str, topic: str, values: range) -> None:
    """Write ``values`` with acks=all and wait until the broker acknowledged each one."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    failed: list[str] = []
    for value in values:
        producer.produce(
            topic,
            str(value).encode(),
            on_delivery=lambda err, _msg: failed.append(str(err)) if err else None,
        )
    assert producer.flush(30) == 0
    assert failed == []


def consume_all(bootstrap: str, topic: str, expected: int) -> list[int]:
    """Read ``topic`` from the beginning until ``expected`` records arrived (or 60 s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[int] = []
    try:
        for _ in range(600):
            if len(seen) >= expected:
                break
            for message in consumer.consume(500, timeout=0.1):
                if message.error() is None:
                    seen.append(int(message.value()))
    finally:
        consumer.close()
    return seen


def test_a_killed_broker_restarts_on_its_data_with_every_record() -> None:
    """SIGKILL, restart on the same dir and ports: old records stay, new ones are accepted."""
    module = load_kafka_broker_module()
    broker = module.KafkaBroker(port=0)
    try:
        broker.start()
        port, workdir, cluster_id = broker.port, broker.workdir, broker.cluster_id
        first_pid = broker.pid
        topic = f"restart-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[
            topic
        ].result(30)
        produce(broker.bootstrap, topic, range(500))

        broker.kill()
        assert not broker.is_running()
        assert workdir is not None and (workdir / "data").is_dir()
        with pytest.raises(module.BrokerError):
            broker.kill()

        seconds = broker.restart()
        assert seconds > 0
        assert broker.is_running() and broker.pid != first_pid
        assert (broker.port, broker.workdir, broker.cluster_id) == (port, workdir, cluster_id)
        with pytest.raises(module.BrokerError):
            broker.restart()

        produce(broker.bootstrap, topic, range(500, 600))
        assert sorted(consume_all(broker.bootstrap, topic, 600)) == list(range(600))
    finally:
        broker.stop()
    assert workdir is not None and not workdir.exists()
