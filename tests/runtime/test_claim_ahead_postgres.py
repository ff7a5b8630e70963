"""A batch's inbox claim sent ahead on the PostgreSQL store: redeliveries are still dropped.

The worker sends a batch's claim to the server and handles the records whose handlers
take no context before it reads the answer. When the answer names records handled
already, the batch is handled again without them: these tests redeliver handled records
in the same batch as new ones, on a real server, and count what each handler kept.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.store.postgres import PostgresStore
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced
from .fixtures.shop import Shop
from .helpers import run_until_idle

FAST = WorkerConfig(poll_timeout=0.0)
NOTIFIED = "test.runtime.CustomerNotified"
RESERVED = "test.runtime.StockReserved"
COMPLETED = "test.runtime.OrderCompleted"


@pytest.fixture
def stores(postgres_url: str) -> Iterator[dict[str, PostgresStore]]:
    """Yield one PostgreSQL store per service of the shop, each on a fresh schema."""
    opened: dict[str, PostgresStore] = {}
    yield opened
    for store in opened.values():
        store.close()


def _workers(
    shop: Shop, transport: MemoryTransport, serde: Any, stores: dict[str, PostgresStore], url: str
) -> list[Worker]:
    for service in shop.services:
        if service.name not in stores:
            stores[service.name] = PostgresStore(url, schema=f"c_{uuid.uuid4().hex[:12]}")
    return [Worker(s, transport, serde, config=FAST, inbox=stores[s.name]) for s in shop.services]


def _rewind(transport: MemoryTransport, bus: MemoryBus, group: str) -> None:
    """Move ``group`` back to offset 0 everywhere: every record it handled comes again."""
    transport.consumer(group).commit(dict.fromkeys(bus.committed(group), 0))


def _event_ids(bus: MemoryBus, topic: str) -> Counter[bytes]:
    return Counter(headers_to_dict(r.headers)[Header.EVENT_ID] for r in bus.records(topic))


def _orders(shop: Shop, transport: MemoryTransport, serde: Any, ids: range) -> None:
    publisher = Publisher(shop.orders, transport, serde)
    for i in ids:
        publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 100))


def test_handled_records_in_a_batch_with_new_ones_are_dropped(  # noqa: PLR0917 (fixtures)
    shop: Shop,
    bus: MemoryBus,
    transport: MemoryTransport,
    serde: Any,
    stores: dict[str, PostgresStore],
    postgres_url: str,
) -> None:
    """Rewound groups get handled and new records in one batch: each handler keeps one run
    per order, with a context (inventory, its row written once) or without (notifier)."""
    _orders(shop, transport, serde, range(4))
    workers = _workers(shop, transport, serde, stores, postgres_url)
    run_until_idle(workers)
    for worker in workers:
        worker.close()
    for group in ("inventory", "notifier", "orders"):
        _rewind(transport, bus, group)
    _orders(shop, transport, serde, range(4, 7))

    run_until_idle(_workers(shop, transport, serde, stores, postgres_url))

    notified = _event_ids(bus, NOTIFIED)
    assert len(notified) == 7 and set(notified.values()) == {1}
    assert set(_event_ids(bus, RESERVED).values()) == {1}
    # the notifier's handler takes no context: it ran for the batch before the claim's
    # answer came back, and that run's output was dropped (CustomerNotified above); the
    # inventory's takes one, so the answer was read before its first record
    assert all(shop.state.count("notifier.tell", f"o{i}") in (1, 2) for i in range(7))
    assert all(shop.state.count("inventory.reserve", f"o{i}") == 1 for i in range(7))
    store = stores["inventory"]
    store.begin()
    rows = store.connection.execute("SELECT count(*) FROM reservations").fetchone()[0]
    store.commit()
    assert rows == 7


def test_a_handler_failing_in_a_batch_with_handled_records_is_retried_once(  # noqa: PLR0917
    shop: Shop,
    bus: MemoryBus,
    transport: MemoryTransport,
    serde: Any,
    stores: dict[str, PostgresStore],
    postgres_url: str,
) -> None:
    """A handler without context raises before the claim's answer is read (the answer
    names records handled already): the batch is handled again without them, the failure
    is retried there once, and every order is notified once."""
    _orders(shop, transport, serde, range(3))
    workers = _workers(shop, transport, serde, stores, postgres_url)
    run_until_idle(workers)
    handled = bus.records(COMPLETED)
    _orders(shop, transport, serde, range(3, 5))
    run_until_idle(workers[:-1])  # every service but the notifier
    producer = transport.producer()
    for record in handled:  # copies of handled records, after the new ones
        producer.publish(COMPLETED, record.value, key=record.key, headers=record.headers)
    shop.state.flaky["notifier.tell"] = 1  # o3, the batch's first record, raises once
    run_until_idle(workers[-1:])

    notified = _event_ids(bus, NOTIFIED)
    assert len(notified) == 5 and set(notified.values()) == {1}
    assert [shop.state.count("notifier.tell", f"o{i}") for i in range(5)] == [1, 1, 1, 2, 1]
