"""The worker on a real Kafka broker, through confluent-kafka and kafka-python."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from choreo.choreography.service import Retry
from choreo.model.envelope import Header, Role, headers_to_dict
from choreo.runtime import (
    DeadLetterReason,
    Middleware,
    Publisher,
    SqliteInbox,
    Worker,
    WorkerConfig,
    deadletter_topic,
)
from choreo.testing import SagaTestKit
from choreo.transports.base import Record, TopicPartition, Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

from .fixtures.events import CustomerNotified, OrderPlaced
from .fixtures.shop import build_shop, create_reservations_table
from .helpers import ControlledTransport, Crash

pytestmark = pytest.mark.kafka

KINDS = ["confluent", "kafka-python"]
FAST_CONSUMER = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 300,
    "fetch.wait.max.ms": 50,
}
NO_WAIT = Retry(max_attempts=3, backoff=0.0, jitter=False)


def _transport(kind: str, bootstrap: str) -> Transport:
    config = KafkaConfig(
        bootstrap_servers=bootstrap, client_id="choreo-runtime-tests", consumer=FAST_CONSUMER
    )
    return open_transport(kind, config=config)


class _Names:
    """Unique topic and group names for one test on the shared broker."""

    def __init__(self) -> None:
        self.prefix = f"rt{uuid.uuid4().hex[:10]}."

    def topic(self, event_type: str) -> str:
        return f"{self.prefix}{event_type}"

    def deadletter(self, service: str) -> str:
        return f"{self.prefix}{deadletter_topic(service)}"

    def config(self, **extra: Any) -> WorkerConfig:
        return WorkerConfig(
            poll_timeout=0.1,
            topic_naming=self.topic,
            deadletter_naming=self.deadletter,
            retry=NO_WAIT,
            compensation_retry=NO_WAIT,
            **extra,
        )


@pytest.fixture
def names() -> _Names:
    """Return fresh names for this test."""
    return _Names()


@pytest.fixture(params=KINDS)
def kafka(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Iterator[Transport]:
    """Yield a transport of each Kafka kind on the session's broker."""
    yield _transport(request.param, kafka_bootstrap)


def _notified(kit: SagaTestKit, *cids: str) -> Callable[[], bool]:
    name = "test.runtime.CustomerNotified"
    return lambda: all(name in kit.event_types(cid) for cid in cids)


def _read(transport: Transport, topic: str, count: int, timeout: float = 30.0) -> list[Record]:
    """Read ``count`` records of ``topic`` from the start with a throwaway group."""
    consumer = transport.consumer(f"reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            records.extend(consumer.poll(500, 0.2))
        settle = time.monotonic() + 1.0  # anything beyond ``count`` would be a duplicate
        while time.monotonic() < settle:
            records.extend(consumer.poll(500, 0.2))
    finally:
        consumer.close()
    return records


REREAD_S = 3.0
"""How long a new member of a group keeps polling once it owns its partitions."""


class _Assigned(Middleware):
    """Records the partitions assigned to the worker."""

    def __init__(self) -> None:
        self.partitions: list[TopicPartition] = []

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        self.partitions.extend(partitions)


def _handled_once_assigned(worker: Worker, assigned: _Assigned) -> int:
    """Run ``worker`` until it owns partitions, then ``REREAD_S`` longer; return what it handled.

    A new member of a group starts at the group's committed offsets, so an event whose
    offset was not committed is fetched by its first polls after the assignment: with
    ``fetch.wait.max.ms=50`` that is well inside ``REREAD_S`` (a fixed 8 s from the start
    before, most of it spent after the first fetch). The worker is closed.
    """
    handled = 0
    try:
        deadline = time.monotonic() + 60
        while not assigned.partitions:
            assert time.monotonic() < deadline, "the new member was assigned nothing in 60 s"
            handled += worker.run_once(0.2)
        reread = time.monotonic() + REREAD_S
        while time.monotonic() < reread:
            handled += worker.run_once(0.2)
    finally:
        worker.close()
    return handled


def test_a_saga_completes_and_another_compensates_in_reverse_order(
    kafka: Transport, names: _Names, serde: Any
) -> None:
    """Five services on Kafka: one saga completes, one undoes payment then inventory."""
    shop = build_shop(retry=NO_WAIT)
    shop.state.unshippable.add("o2")
    kit = SagaTestKit(
        shop.services,
        serde=serde,
        transport=kafka,
        config=names.config(),
        group_prefix=names.prefix,
    )
    try:
        ok = kit.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
        bad = kit.start(shop.saga, OrderPlaced("o2", "lamp", 2, 200))
        kit.run_until(_notified(kit, ok, bad), timeout=90)
        kit.assert_completed(ok)
        kit.assert_failed(bad)
        undone = [e.envelope.step for e in kit.events(bad) if e.role is Role.COMPENSATION]
        assert undone == ["payment.authorize", "inventory.reserve"]
        assert [e.role for e in kit.events(bad)][-2:] == [Role.FAILED, Role.NOTICE]
        assert kit.assert_emitted(bad, CustomerNotified)[0].event == CustomerNotified(
            "o2", "OrderFailed"
        )
        assert shop.state.count("inventory.reserve", "o2") == 1
        assert shop.state.count("inventory.release", "o2") == 1
    finally:
        kit.close()


def test_poison_records_are_dead_lettered_once(kafka: Transport, names: _Names, serde: Any) -> None:
    """Garbage and header-less records go to the dead-letter topic once; the saga goes on."""
    shop = build_shop(retry=NO_WAIT)
    kit = SagaTestKit(
        [shop.orders, shop.inventory],
        serde=serde,
        transport=kafka,
        config=names.config(),
        group_prefix=names.prefix,
    )
    try:
        topic = names.topic("test.runtime.OrderPlaced")
        kafka.create_topics([topic])
        kit.publish_raw(topic, b"\x00not avro", key=b"poison-1")
        kit.publish_raw(topic, b"no headers", key=b"poison-2")
        cid = kit.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
        kit.run_until(lambda: "test.runtime.StockReserved" in kit.event_types(cid), timeout=90)
        kit.run_until(lambda: len(kit.dead_letters()) >= 2, timeout=30)
        letters = _read(kafka, names.deadletter("inventory"), 2)
        assert sorted(r.key or b"" for r in letters) == [b"poison-1", b"poison-2"]
        reasons = sorted(headers_to_dict(r.headers)[Header.DLQ_REASON] for r in letters)
        assert reasons[0].startswith(DeadLetterReason.BAD_ENVELOPE.value.encode())
        assert reasons[1].startswith(DeadLetterReason.BAD_ENVELOPE.value.encode())
        assert {headers_to_dict(r.headers)[Header.DLQ_SOURCE_TOPIC] for r in letters} == {
            topic.encode()
        }
        assert shop.state.count("inventory.reserve") == 1
    finally:
        kit.close()


def test_exactly_once_round_trip(kafka: Transport, names: _Names, serde: Any) -> None:
    """With transactions a saga completes and a restarted group has nothing left to read."""
    shop = build_shop(retry=NO_WAIT)
    config = names.config(exactly_once=True)
    kit = SagaTestKit(
        shop.services, serde=serde, transport=kafka, config=config, group_prefix=names.prefix
    )
    try:
        cid = kit.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
        kit.run_until(_notified(kit, cid), timeout=120)
        kit.assert_completed(cid)
        for step in ("inventory.reserve", "payment.authorize", "shipping.schedule"):
            assert shop.state.count(step) == 1
    finally:
        kit.close()
    reserved = _read(kafka, names.topic("test.runtime.StockReserved"), 1)
    assert len(reserved) == 1
    assigned = _Assigned()
    again = Worker(
        shop.inventory,
        kafka,
        serde,
        config=names.config(exactly_once=True, group_id=f"{names.prefix}inventory"),
        middleware=[assigned],
    )
    assert _handled_once_assigned(again, assigned) == 0


def test_crash_after_publish_replays_the_outbox_without_duplicate_effects(
    kafka_bootstrap: str, names: _Names, serde: Any, tmp_path: Path
) -> None:
    """A worker killed after publishing is replaced; the duplicate it publishes reaches
    payment, which drops it: payment still authorizes once."""
    transport = ControlledTransport(_transport("confluent", kafka_bootstrap))
    shop = build_shop(retry=NO_WAIT)
    inbox = SqliteInbox(tmp_path / "inventory.db")
    create_reservations_table(inbox.connection)
    config = names.config(group_id=f"{names.prefix}inventory")
    Publisher(shop.orders, transport, serde, config=config).start(
        shop.saga, OrderPlaced("o1", "book", 1, 100)
    )
    first = Worker(shop.inventory, transport, serde, config=config, inbox=inbox)
    transport.control.crash_after_flush = 1
    deadline = time.monotonic() + 60
    with pytest.raises(Crash):
        while time.monotonic() < deadline:
            first.run_once(0.2)
    transport.kill()

    second = Worker(shop.inventory, transport, serde, config=config, inbox=SqliteInbox(inbox.path))
    payment = Worker(
        shop.payment, transport, serde, config=names.config(group_id=f"{names.prefix}payment")
    )
    authorized = names.topic("test.runtime.PaymentAuthorized")
    try:
        deadline = time.monotonic() + 60
        while shop.state.count("payment.authorize") < 1 and time.monotonic() < deadline:
            second.run_once(0.2)
            payment.run_once(0.2)
        reserved_topic = names.topic("test.runtime.StockReserved")
        while sum(r.topic == reserved_topic for r in transport.control.polled) < 2:
            assert time.monotonic() < deadline, "the duplicate never reached payment"
            second.run_once(0.2)  # payment polled both copies: the second was dropped
            payment.run_once(0.2)
    finally:
        second.close()
        payment.close()
    reserved = _read(transport, names.topic("test.runtime.StockReserved"), 2)
    ids = {headers_to_dict(r.headers)[Header.EVENT_ID] for r in reserved}
    assert len(reserved) == 2 and len(ids) == 1
    assert shop.state.count("inventory.reserve") == 1
    assert shop.state.count("payment.authorize") == 1
    assert len(_read(transport, authorized, 1)) == 1


def test_graceful_stop_commits_what_was_handled(
    kafka_bootstrap: str, names: _Names, serde: Any
) -> None:
    """run() on a thread stops on request; a new member of the group finds nothing to redo."""
    transport = _transport("confluent", kafka_bootstrap)
    shop = build_shop(retry=NO_WAIT)
    config = names.config(group_id=f"{names.prefix}inventory")
    worker = Worker(shop.inventory, transport, serde, config=config)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    publisher = Publisher(shop.orders, transport, serde, config=config)
    for i in range(10):
        publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 100))
    publisher.close()
    deadline = time.monotonic() + 60
    while shop.state.count("inventory.reserve") < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert shop.state.count("inventory.reserve") == 10

    assigned = _Assigned()
    again = Worker(shop.inventory, transport, serde, config=config, middleware=[assigned])
    assert _handled_once_assigned(again, assigned) == 0
    assert shop.state.count("inventory.reserve") == 10
