"""Topic layouts (per namespace, one shared topic) and the at-least-once commit interval."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from choreo.errors import ConfigurationError
from choreo.model.envelope import Header, Role, headers_to_dict
from choreo.model.topics import TopicNaming
from choreo.runtime import (
    Publisher,
    Worker,
    WorkerConfig,
    shared_topic,
    topic_for,
    topic_per_namespace,
)
from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced
from .fixtures.shop import Shop
from .helpers import envelopes, run_until_idle, saga_records

# --- layouts -------------------------------------------------------------------------------


def test_per_namespace_layout_groups_a_namespace_in_one_topic() -> None:
    """An event type goes to its namespace's topic; a type without namespace keeps its own."""
    assert topic_per_namespace("shop.orders.OrderCreated") == "shop.orders"
    assert topic_per_namespace("shop.orders.OrderFailed") == "shop.orders"
    assert topic_per_namespace("shop.payments.PaymentCharged") == "shop.payments"
    assert topic_per_namespace("Standalone") == "Standalone"
    assert topic_for("shop.orders.OrderCreated") == "shop.orders.OrderCreated"


def test_shared_topic_sends_every_type_to_one_legal_topic() -> None:
    """shared_topic(name) maps every type to ``name``; an illegal Kafka topic name is refused."""
    naming = shared_topic("shop.OrderFulfillment")
    assert {naming(t) for t in ("a.B", "c.D", "E")} == {"shop.OrderFulfillment"}
    assert "shop.OrderFulfillment" in repr(naming)
    for bad in ("", ".", "..", "has space", "x" * 250, "new\nline"):
        with pytest.raises(ConfigurationError, match="not a legal Kafka topic name"):
            shared_topic(bad)


@pytest.mark.parametrize(
    "naming", [topic_per_namespace, shared_topic("shop.saga")], ids=["namespace", "shared"]
)
def test_a_saga_completes_on_a_wider_layout_without_dead_letters(
    naming: TopicNaming, shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Every service reads the shared topic, handles its types once and skips the others."""
    config = WorkerConfig(poll_timeout=0.0, topic_naming=naming)
    workers = [Worker(s, transport, serde, config=config) for s in shop.services]
    publisher = Publisher(shop.orders, transport, serde, config=config)
    cid = publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
    run_until_idle(workers)
    event_topics = {naming(t) for s in shop.services for t in s.consumed_types}
    assert len(event_topics) == 1
    chain = envelopes(saga_records(bus, cid))
    assert [e.role for e in chain][-2:] == [Role.COMPLETED, Role.NOTICE]
    assert shop.state.count("inventory.reserve", "o1") == 1
    assert not [t for t in bus.topics() if t.startswith("choreo.deadletter") and bus.records(t)]
    for worker in workers:
        worker.close()


@pytest.mark.kafka
def test_a_saga_completes_on_one_shared_topic_on_a_real_broker(
    shop: Shop, serde: Any, kafka_bootstrap: str
) -> None:
    """On Kafka (confluent), five services share one topic and the saga completes once."""
    prefix = f"lt{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}shop.all"
    transport = open_transport(
        "confluent",
        config=KafkaConfig(bootstrap_servers=kafka_bootstrap, consumer={"fetch.wait.max.ms": 50}),
    )
    config = WorkerConfig(
        poll_timeout=0.1,
        topic_naming=shared_topic(topic),
        deadletter_naming=lambda s: f"{prefix}dead.{s}",
        group_id=None,
    )
    workers = [
        Worker(s, transport, serde, config=WorkerConfig(**{**_fields(config),
                                                          "group_id": f"{prefix}{s.name}"}))
        for s in shop.services
    ]
    try:
        for worker in workers:
            worker.start()
        cid = Publisher(shop.orders, transport, serde, config=config).start(
            shop.saga, OrderPlaced("o1", "book", 1, 100)
        )
        deadline = time.monotonic() + 60
        reader = transport.consumer(f"{prefix}reader")
        reader.subscribe([topic])
        roles: list[bytes] = []
        while b"notice" not in roles and time.monotonic() < deadline:
            for worker in workers:
                worker.run_once(0.05)
            for record in reader.poll(500, 0.0):
                headers = headers_to_dict(record.headers)
                if headers[Header.CORRELATION_ID] == cid.encode():
                    roles.append(headers[Header.ROLE])
        reader.close()
        assert roles == [b"start", b"step", b"step", b"step", b"completed", b"notice"]
        assert shop.state.count("inventory.reserve", "o1") == 1
    finally:
        for worker in workers:
            worker.close()


def _fields(config: WorkerConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in WorkerConfig.__dataclass_fields__}


# --- commit interval -----------------------------------------------------------------------


def _publish_orders(shop: Shop, transport: MemoryTransport, serde: Any, count: int) -> None:
    publisher = Publisher(shop.orders, transport, serde)
    for i in range(count):
        publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 100))


def _committed(bus: MemoryBus, group: str) -> int:
    return sum(bus.committed(group).values())


def _inventory_worker(shop: Shop, transport: MemoryTransport, serde: Any,
                      **extra: Any) -> Worker:
    inventory = next(s for s in shop.services if s.name == "inventory")
    return Worker(inventory, transport, serde,
                  config=WorkerConfig(poll_timeout=0.0, max_poll_records=1, **extra))


def test_commit_interval_zero_commits_after_every_batch(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """commit_interval=0 commits each batch's offsets as soon as it is delivered."""
    _publish_orders(shop, transport, serde, 3)
    worker = _inventory_worker(shop, transport, serde, commit_interval=0.0)
    for expected in (1, 2, 3):
        assert worker.run_once() == 1
        assert _committed(bus, "inventory") == expected
    worker.close()


def test_commit_interval_holds_offsets_until_due_and_commits_them_at_close(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Within the interval only the first batch is committed; close commits the rest."""
    _publish_orders(shop, transport, serde, 4)
    worker = _inventory_worker(shop, transport, serde, commit_interval=3600.0)
    for _ in range(4):
        assert worker.run_once() == 1
    assert _committed(bus, "inventory") == 1  # the first commit is never held
    emitted = sum(len(bus.records(t)) for t in bus.topics() if "StockReserved" in t)
    assert emitted == 4  # the output is published at once; only the offsets wait
    worker.close()
    assert _committed(bus, "inventory") == 4


def test_held_offsets_are_committed_once_the_interval_passed(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """An idle poll after the interval commits what was held back."""
    _publish_orders(shop, transport, serde, 3)
    worker = _inventory_worker(shop, transport, serde, commit_interval=0.2)
    for _ in range(3):
        worker.run_once()
    assert _committed(bus, "inventory") == 1
    time.sleep(0.25)
    assert worker.run_once() == 0
    assert _committed(bus, "inventory") == 3
    worker.close()


def test_held_offsets_are_committed_when_their_partition_is_revoked(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Revoking a partition commits its held offsets, so its next owner handles nothing twice."""
    _publish_orders(shop, transport, serde, 3)
    worker = _inventory_worker(shop, transport, serde, commit_interval=3600.0)
    for _ in range(3):
        worker.run_once()
    partition = TopicPartition("test.runtime.OrderPlaced", 0)
    assert bus.committed("inventory") == {partition: 1}
    worker.delivery.revoke([partition])
    assert bus.committed("inventory") == {partition: 3}
    worker.close()


def test_a_replacement_worker_handles_nothing_twice_after_a_clean_close(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Held offsets are committed at close: the next worker of the group starts after them."""
    _publish_orders(shop, transport, serde, 3)
    first = _inventory_worker(shop, transport, serde, commit_interval=3600.0)
    for _ in range(3):
        first.run_once()
    first.close()
    second = _inventory_worker(shop, transport, serde, commit_interval=3600.0)
    assert second.run_once() == 0
    assert shop.state.count("inventory.reserve", "o2") == 1
    second.close()


def test_a_negative_commit_interval_is_refused() -> None:
    """commit_interval must be >= 0."""
    with pytest.raises(ConfigurationError, match="commit_interval"):
        WorkerConfig(commit_interval=-1.0)
