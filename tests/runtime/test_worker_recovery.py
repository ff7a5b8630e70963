"""Redelivery, crashes, delivery failures, rebalances and shutdown lose and duplicate nothing."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from choreo.choreography.service import Retry
from choreo.errors import ConfigurationError, DeliveryError, FatalError, TransientError
from choreo.model.context import Context
from choreo.model.envelope import Header, Role, headers_to_dict
from choreo.runtime import MemoryInbox, Publisher, SqliteInbox, Worker, WorkerConfig
from choreo.transports.base import TopicPartition
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced, StockReserved
from .fixtures.shop import Shop, build_shop, create_reservations_table
from .helpers import ControlledTransport, Crash, envelopes, run_until_idle, saga_records

FAST = WorkerConfig(poll_timeout=0.0)
ORDERS = "test.runtime.OrderPlaced"
RESERVED = "test.runtime.StockReserved"


def _ids(bus: MemoryBus, topic: str) -> list[bytes]:
    return [headers_to_dict(r.headers)[Header.EVENT_ID] for r in bus.records(topic)]


def _reservations(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM reservations").fetchone()[0])


def _inventory_db(path: Path) -> SqliteInbox:
    inbox = SqliteInbox(path)
    create_reservations_table(inbox.connection)
    return inbox


def test_replayed_offsets_produce_no_duplicate_side_effects(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Resetting every group to offset 0 re-reads all records and changes nothing."""
    inboxes = {s.name: MemoryInbox() for s in shop.services}
    workers = [
        Worker(s, transport, serde, config=FAST, inbox=inboxes[s.name]) for s in shop.services
    ]
    publisher = Publisher(shop.orders, transport, serde)
    for i in range(5):
        publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 100))
    run_until_idle(workers)
    calls, records = list(shop.state.calls), {t: len(bus.records(t)) for t in bus.topics()}
    for worker in workers:
        worker.close()
    consumed = sum(sum(bus.committed(group).values()) for group in inboxes)
    for group in inboxes:
        transport.consumer(group).commit(dict.fromkeys(bus.committed(group), 0))

    again = [Worker(s, transport, serde, config=FAST, inbox=inboxes[s.name]) for s in shop.services]
    assert run_until_idle(again) == consumed == 25
    assert shop.state.calls == calls
    assert {t: len(bus.records(t)) for t in bus.topics()} == records


def test_a_duplicated_record_is_handled_once(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A record published twice (same event id) reaches the handler once."""
    inventory = Worker(shop.inventory, transport, serde, config=FAST)
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    original = bus.records(ORDERS)[0]
    producer = transport.producer()
    producer.publish(ORDERS, original.value, key=original.key, headers=original.headers)
    producer.publish(ORDERS, original.value, key=original.key, headers=original.headers)
    assert run_until_idle([inventory]) == 3
    assert shop.state.count("inventory.reserve") == 1
    assert len(bus.records(RESERVED)) == 1


def test_a_handler_rerun_without_its_inbox_re_emits_the_same_ids(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """If the inbox is lost, a re-run emits identical event ids, so the next inbox drops them."""
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    payment = Worker(shop.payment, transport, serde, config=FAST)
    first = Worker(shop.inventory, transport, serde, config=FAST)
    run_until_idle([first, payment])
    first.close()
    transport.consumer("inventory").commit({TopicPartition(ORDERS, 0): 0})
    run_until_idle([Worker(shop.inventory, transport, serde, config=FAST), payment])
    ids = _ids(bus, RESERVED)
    assert len(ids) == 2 and ids[0] == ids[1]
    assert shop.state.count("inventory.reserve") == 2
    assert shop.state.count("payment.authorize") == 1


def test_crash_between_outbox_commit_and_publish_replays_the_outbox(
    shop: Shop, bus: MemoryBus, serde: Any, tmp_path: Path
) -> None:
    """The outbox committed before a crash is published by the next worker, exactly once."""
    path = tmp_path / "inventory.db"
    transport = ControlledTransport(MemoryTransport(bus))
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 2, 2))
    first = Worker(shop.inventory, transport, serde, config=FAST, inbox=_inventory_db(path))
    first.start()
    transport.control.crash_before_flush = 1
    with pytest.raises(Crash):
        first.run_once(0.0)
    transport.kill()
    assert bus.records(RESERVED) == []
    assert _reservations(path) == 1
    assert bus.committed("inventory") == {}

    second = Worker(shop.inventory, transport, serde, config=FAST, inbox=SqliteInbox(path))
    run_until_idle([second])
    assert len(bus.records(RESERVED)) == 1
    assert shop.state.count("inventory.reserve") == 1
    assert _reservations(path) == 1
    assert bus.committed("inventory")[TopicPartition(ORDERS, 0)] == 1
    second.close()
    assert SqliteInbox(path).pending(second.origin) == []


def test_crash_after_publish_before_commit_duplicates_only_ids_downstream_drops(
    shop: Shop, bus: MemoryBus, serde: Any, tmp_path: Path
) -> None:
    """Records published twice after a crash carry the same id, so payment handles one."""
    path = tmp_path / "inventory.db"
    transport = ControlledTransport(MemoryTransport(bus))
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    first = Worker(shop.inventory, transport, serde, config=FAST, inbox=_inventory_db(path))
    first.start()
    transport.control.crash_after_flush = 1
    with pytest.raises(Crash):
        first.run_once(0.0)
    transport.kill()

    second = Worker(shop.inventory, transport, serde, config=FAST, inbox=SqliteInbox(path))
    payment = Worker(shop.payment, transport, serde, config=FAST)
    run_until_idle([second, payment])
    ids = _ids(bus, RESERVED)
    assert len(ids) == 2 and ids[0] == ids[1]
    assert shop.state.count("inventory.reserve") == 1
    assert shop.state.count("payment.authorize") == 1
    assert len(bus.records("test.runtime.PaymentAuthorized")) == 1


def test_a_failed_flush_keeps_the_output_and_holds_back_the_offsets(
    shop: Shop, bus: MemoryBus, serde: Any
) -> None:
    """After a delivery error the next round publishes the batch and commits its offsets."""
    transport = ControlledTransport(MemoryTransport(bus))
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    inventory = Worker(shop.inventory, transport, serde, config=FAST)
    inventory.start()
    transport.control.fail_flush = 1
    with pytest.raises(DeliveryError):
        inventory.run_once(0.0)
    assert bus.committed("inventory") == {}
    assert inventory.run_once(0.0) == 0
    assert len(bus.records(RESERVED)) == 2  # published before the failed flush, then again
    assert len(set(_ids(bus, RESERVED))) == 1
    assert bus.committed("inventory")[TopicPartition(ORDERS, 0)] == 1
    assert shop.state.count("inventory.reserve") == 1


def test_handler_database_writes_are_undone_with_a_failed_attempt(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any, tmp_path: Path
) -> None:
    """A write made by a failing attempt is rolled back; the retry's write is kept."""
    path = tmp_path / "inventory.db"
    inbox = _inventory_db(path)
    original = shop.inventory.handler_for(ORDERS)
    assert original is not None
    attempts: list[int] = []

    def reserve_then_fail_once(event: OrderPlaced, ctx: Context) -> StockReserved:
        attempts.append(ctx.attempt)
        ctx.db.execute("INSERT INTO reservations VALUES (?, ?)", (event.order_id, event.quantity))
        if ctx.attempt == 1:
            raise TransientError("lost the connection after writing")
        return StockReserved(event.order_id, event.sku, event.quantity)

    from choreo.choreography.service import Service

    service = Service("inventory", sagas=[shop.saga])
    service.step(on=OrderPlaced, emits=StockReserved, retry=Retry(2, backoff=0.0))(
        reserve_then_fail_once
    )
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    run_until_idle([Worker(service, transport, serde, config=FAST, inbox=inbox)])
    assert attempts == [1, 2]
    assert _reservations(path) == 1
    assert len(bus.records(RESERVED)) == 1


def test_graceful_stop_finishes_the_batch_commits_and_closes(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """run() in a thread handles what arrives; stop() makes it commit, close and return."""
    inventory = Worker(shop.inventory, transport, serde, config=WorkerConfig(poll_timeout=0.05))
    stop = threading.Event()
    thread = threading.Thread(target=inventory.run, args=(stop,))
    thread.start()
    publisher = Publisher(shop.orders, transport, serde)
    for i in range(20):
        publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 1))
    deadline = time.monotonic() + 60
    while len(bus.records(RESERVED)) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    inventory.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert stop.is_set()
    assert len(bus.records(RESERVED)) == 20
    assert bus.committed("inventory")[TopicPartition(ORDERS, 0)] == 20
    with pytest.raises(Exception, match="closed"):
        inventory.run_once(0.0)


def test_stop_during_a_backoff_leaves_the_record_for_redelivery(
    bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Stopping while a handler waits to retry neither commits nor dead-letters the record."""
    shop = build_shop(retry=None)  # the worker's slow default budget applies
    shop.state.broken.add("inventory.reserve")
    slow = WorkerConfig(poll_timeout=0.05, retry=Retry(max_attempts=5, backoff=30.0))
    inventory = Worker(shop.inventory, transport, serde, config=slow)
    publisher = Publisher(shop.orders, transport, serde)
    publisher.start(shop.saga, OrderPlaced("o", "book", 1, 1))
    thread = threading.Thread(target=inventory.run)
    thread.start()
    deadline = time.monotonic() + 60
    while not shop.state.count("inventory.reserve") and time.monotonic() < deadline:
        time.sleep(0.01)
    inventory.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert shop.state.count("inventory.reserve") == 1
    assert bus.committed("inventory").get(TopicPartition(ORDERS, 0), 0) == 0
    assert bus.records("choreo.deadletter.inventory") == []

    shop.state.broken.clear()
    again = Worker(shop.inventory, transport, serde, config=FAST, inbox=inventory.inbox)
    run_until_idle([again])
    assert len(bus.records(RESERVED)) == 1


def test_partitions_are_handled_in_a_thread_pool_in_order(serde: Any, shop: Shop) -> None:
    """concurrency=3 spreads partitions over threads; each saga is handled once, in order."""
    bus = MemoryBus(default_partitions=4)
    transport = MemoryTransport(bus)
    threads: Counter[str] = Counter()
    dbs: set[object] = set()
    original = shop.inventory.handler_for(ORDERS)
    assert original is not None

    config = WorkerConfig(poll_timeout=0.0, concurrency=3, topic_partitions=4)
    inventory = Worker(
        shop.inventory, transport, serde, config=config, inbox=SqliteInbox(":memory:")
    )
    spy = Worker(shop.payment, transport, serde, config=FAST)
    publisher = Publisher(shop.orders, transport, serde, config=config)
    cids = [publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 1)) for i in range(40)]
    assert bus.partitions(ORDERS) == 4

    real_invoke = inventory.dispatcher.invoker.invoke

    def spying_invoke(*args: Any, **kwargs: Any) -> Any:
        threads[threading.current_thread().name] += 1
        dbs.add(args[3])  # the inbox whose connection ctx.db would be
        time.sleep(0.002)  # keep the thread busy so the pool starts others
        return real_invoke(*args, **kwargs)

    inventory.dispatcher.invoker.invoke = spying_invoke  # type: ignore[method-assign]
    try:
        run_until_idle([inventory, spy])
        assert shop.state.count("inventory.reserve") == 40
        assert len(bus.records(RESERVED)) == 40
        assert shop.state.count("payment.authorize") == 40
        assert all(name.startswith("choreo-inventory") for name in threads)
        assert len(threads) > 1
        assert dbs == {None}
        for partition in range(4):
            offsets = [r.offset for r in bus.records(ORDERS, partition)]
            assert bus.committed("inventory")[TopicPartition(ORDERS, partition)] == len(offsets)
        for cid in cids:
            assert [e.role for e in envelopes(saga_records(bus, cid))] == [
                Role.START,
                Role.STEP,
                Role.STEP,
            ]
    finally:
        inventory.close()  # its pool's threads end with it
        spy.close()


def test_a_rebalance_neither_loses_nor_repeats_records(shop: Shop, serde: Any) -> None:
    """Two members of one group, joining mid-stream, handle every record exactly once."""
    bus = MemoryBus(default_partitions=2)
    transport = MemoryTransport(bus)
    config = WorkerConfig(poll_timeout=0.0, max_poll_records=3, topic_partitions=2)
    publisher = Publisher(shop.orders, transport, serde, config=config)
    for i in range(30):
        publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 1))
    first = Worker(shop.inventory, transport, serde, config=config)
    assert first.run_once(0.0) == 3
    second = Worker(shop.inventory, transport, serde, config=config)
    run_until_idle([first, second])
    assert Counter(o for s, o in shop.state.calls if s == "inventory.reserve") == {
        f"o{i}": 1 for i in range(30)
    }
    assert len(bus.records(RESERVED)) == 30
    first.close()  # held offsets (WorkerConfig.commit_interval) are committed at close
    second.close()
    assert sum(bus.committed("inventory").values()) == 30


def test_a_fenced_exactly_once_worker_stops_and_its_replacement_duplicates_nothing(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A fenced producer ends run() with FatalError naming the id; nothing is published twice."""
    config = WorkerConfig(poll_timeout=0.0, exactly_once=True, instance_id="inventory-0")
    inbox = MemoryInbox()
    inventory = Worker(shop.inventory, transport, serde, config=config, inbox=inbox)
    publisher = Publisher(shop.orders, transport, serde)
    publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 1))
    run_until_idle([inventory])
    assert len(bus.records(RESERVED)) == 1
    assert bus.committed("inventory")[TopicPartition(ORDERS, 0)] == 1

    transactional_id = config.transactional_id_for("inventory")
    assert transactional_id == "choreo.inventory.inventory.inventory-0"
    transport.producer(transactional_id=transactional_id)  # another process, same id
    publisher.start(shop.saga, OrderPlaced("o2", "book", 1, 1))
    with pytest.raises(FatalError, match=re.escape(f"transactional id {transactional_id!r}")):
        inventory.run()
    assert len(bus.records(RESERVED)) == 1
    assert bus.committed("inventory")[TopicPartition(ORDERS, 0)] == 1
    assert inbox.seen("inventory", _ids_text(bus, ORDERS)) == {_ids_text(bus, ORDERS)[0]}

    replacement = Worker(shop.inventory, transport, serde, config=config, inbox=inbox)
    run_until_idle([replacement])
    assert len(bus.records(RESERVED)) == 2
    assert len(set(_ids(bus, RESERVED))) == 2
    assert shop.state.count("inventory.reserve", "o2") == 2  # run twice, emitted once
    assert bus.committed("inventory")[TopicPartition(ORDERS, 0)] == 2


def _ids_text(bus: MemoryBus, topic: str) -> list[str]:
    return [i.decode() for i in _ids(bus, topic)]


def test_old_inbox_rows_are_pruned(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """With a tiny retention, a batch forgets the ids handled long enough ago."""
    inbox = MemoryInbox()
    config = WorkerConfig(poll_timeout=0.0, inbox_retention=0.001, prune_interval=0.0)
    inventory = Worker(shop.inventory, transport, serde, config=config, inbox=inbox)
    publisher = Publisher(shop.orders, transport, serde)
    publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 1))
    run_until_idle([inventory])
    first_id = _ids(bus, ORDERS)[0].decode()
    assert inbox.seen("inventory", [first_id]) == {first_id}
    time.sleep(0.01)
    publisher.start(shop.saga, OrderPlaced("o2", "book", 1, 1))
    run_until_idle([inventory])
    assert inbox.seen("inventory", [first_id]) == set()


def test_the_instance_id_makes_the_consumer_a_static_member(
    shop: Shop, bus: MemoryBus, serde: Any
) -> None:
    """WorkerConfig.instance_id reaches the transport's consumer; the default is dynamic."""
    transport = ControlledTransport(MemoryTransport(bus))
    for config in (WorkerConfig(instance_id="inventory-0"), WorkerConfig()):
        worker = Worker(shop.inventory, transport, serde, config=config)
        worker.start()
        worker.close()
    assert transport.control.instance_ids == ["inventory-0", None]
    with pytest.raises(ConfigurationError, match="instance_id"):
        WorkerConfig(instance_id="")
