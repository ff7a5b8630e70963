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


class _Shop:
    """The shop's workers, each on its own PostgreSQL store (closed by the fixture)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stores: dict[str, PostgresStore] = {}
        self.workers: list[Worker] = []

    def workers_of(self, shop: Shop, transport: MemoryTransport, serde: Any) -> list[Worker]:
        """Return a new worker per service of ``shop`` (each service keeps its store)."""
        for service in shop.services:
            if service.name not in self.stores:
                schema = f"c_{uuid.uuid4().hex[:12]}"
                self.stores[service.name] = PostgresStore(self.url, schema=schema)
        made = [
            Worker(s, transport, serde, config=FAST, inbox=self.stores[s.name])
            for s in shop.services
        ]
        self.workers.extend(made)
        return made


@pytest.fixture
def on_postgres(postgres_url: str) -> Iterator[_Shop]:
    """Yield a factory of workers on PostgreSQL stores; close them all, then the stores."""
    opened = _Shop(postgres_url)
    yield opened
    for worker in opened.workers:  # their outbox relays first: they use the stores
        worker.close()
    for store in opened.stores.values():
        store.close()


def _rewind(transport: MemoryTransport, bus: MemoryBus, group: str) -> None:
    """Move ``group`` back to offset 0 everywhere: every record it handled comes again."""
    transport.consumer(group).commit(dict.fromkeys(bus.committed(group), 0))


def _event_ids(bus: MemoryBus, topic: str) -> Counter[bytes]:
    return Counter(headers_to_dict(r.headers)[Header.EVENT_ID] for r in bus.records(topic))


def _orders(shop: Shop, transport: MemoryTransport, serde: Any, ids: range) -> None:
    publisher = Publisher(shop.orders, transport, serde)
    for i in ids:
        publisher.start(shop.saga, OrderPlaced(f"o{i}", "book", 1, 100))


def test_handled_records_in_a_batch_with_new_ones_are_dropped(
    shop: Shop,
    bus: MemoryBus,
    transport: MemoryTransport,
    serde: Any,
    on_postgres: _Shop,
) -> None:
    """Rewound groups get handled and new records in one batch: each handler keeps one run
    per order, with a context (inventory, its row written once) or without (notifier)."""
    _orders(shop, transport, serde, range(4))
    workers = on_postgres.workers_of(shop, transport, serde)
    run_until_idle(workers)
    for worker in workers:
        worker.close()
    for group in ("inventory", "notifier", "orders"):
        _rewind(transport, bus, group)
    _orders(shop, transport, serde, range(4, 7))

    run_until_idle(on_postgres.workers_of(shop, transport, serde))

    notified = _event_ids(bus, NOTIFIED)
    assert len(notified) == 7 and set(notified.values()) == {1}
    assert set(_event_ids(bus, RESERVED).values()) == {1}
    # the notifier's handler takes no context: it ran for the batch before the claim's
    # answer came back, and that run's output was dropped (CustomerNotified above); the
    # inventory's takes one, so the answer was read before its first record
    assert all(shop.state.count("notifier.tell", f"o{i}") in (1, 2) for i in range(7))
    assert all(shop.state.count("inventory.reserve", f"o{i}") == 1 for i in range(7))
    store = on_postgres.stores["inventory"]
    store.begin()
    rows = store.connection.execute("SELECT count(*) FROM reservations").fetchone()[0]
    store.commit()
    assert rows == 7


def _notifier_batch_with_copies(
    shop: Shop,
    bus: MemoryBus,
    transport: MemoryTransport,
    serde: Any,
    on_postgres: _Shop,
    *,
    new: int,
) -> list[Worker]:
    """Handle orders o0-o2 everywhere, then ``new`` more everywhere but the notifier, and
    publish copies of o0-o2's OrderCompleted after them: the notifier's next batch holds
    the new records first, then the handled ones. Return the workers (notifier last)."""
    _orders(shop, transport, serde, range(3))
    workers = on_postgres.workers_of(shop, transport, serde)
    run_until_idle(workers)
    handled = bus.records(COMPLETED)
    _orders(shop, transport, serde, range(3, 3 + new))
    run_until_idle(workers[:-1])  # every service but the notifier
    producer = transport.producer()
    for record in handled:  # copies of handled records, after the new ones
        producer.publish(COMPLETED, record.value, key=record.key, headers=record.headers)
    return workers


def test_a_handler_failing_in_a_batch_with_handled_records_is_retried_once(
    shop: Shop,
    bus: MemoryBus,
    transport: MemoryTransport,
    serde: Any,
    on_postgres: _Shop,
) -> None:
    """A handler without context raises before the claim's answer is read (the answer
    names records handled already): the batch is handled again without them, the failure
    is retried there once, and every order is notified once."""
    workers = _notifier_batch_with_copies(shop, bus, transport, serde, on_postgres, new=2)
    shop.state.flaky["notifier.tell"] = 1  # o3, the batch's first record, raises once
    run_until_idle(workers[-1:])

    notified = _event_ids(bus, NOTIFIED)
    assert len(notified) == 5 and set(notified.values()) == {1}
    assert [shop.state.count("notifier.tell", f"o{i}") for i in range(5)] == [1, 1, 1, 2, 1]


def test_a_failing_handler_gets_its_budget_in_a_batch_with_handled_records(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any, on_postgres: _Shop
) -> None:
    """The attempt that failed before the claim's answer was read counts: the handler is
    called as often as its retry budget allows, no more, and the record is dead-lettered
    once."""
    workers = _notifier_batch_with_copies(shop, bus, transport, serde, on_postgres, new=1)
    shop.state.broken.add("notifier.tell")
    notifier = workers[-1]
    budget = {route.retry.max_attempts for route in notifier.dispatcher.routes.values()}
    run_until_idle([notifier])

    assert [shop.state.count("notifier.tell", f"o{i}") for i in range(3)] == [1, 1, 1]
    assert [shop.state.count("notifier.tell", "o3")] == list(budget)
    letters = bus.records("choreo.deadletter.notifier")
    assert len(letters) == 1
