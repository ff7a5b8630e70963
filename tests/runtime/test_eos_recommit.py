"""After an outage an exactly-once worker re-commits its last committed offsets, and only those.

A restarted broker can complete a transaction without writing its markers, leaving the
group's offsets it sent pending for good (docs/operating.md, "A restarted broker can leave a
transaction hanging"). The worker, once assigned partitions after the outage, commits its
last transaction's offsets once more with a producer of the same transactional id. These
tests check the bookkeeping on the memory bus: the re-commit changes no committed offset
and handles nothing again, and after a transaction that failed (its outcome unknown to
the worker) nothing is re-committed.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from choreo.errors import TransactionError
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced
from .fixtures.serdes import JsonSerde
from .fixtures.shop import ALL_EVENTS, build_shop

ORDERS = "test.runtime.OrderPlaced"
RESERVED = "test.runtime.StockReserved"


def _worker_with_three_orders_handled() -> tuple[MemoryBus, Worker, Any]:
    """An exactly-once inventory worker on a memory bus that handled three orders."""
    bus = MemoryBus(default_partitions=1)
    transport = MemoryTransport(bus)
    serde = JsonSerde(ALL_EVENTS)
    shop = build_shop()
    publisher = Publisher(shop.orders, transport, serde, config=WorkerConfig())
    for n in range(3):
        publisher.start(shop.saga, OrderPlaced(f"o{n}", "book", 1, 1))
    worker = Worker(
        shop.inventory,
        transport,
        serde,
        config=WorkerConfig(poll_timeout=0.0, exactly_once=True, instance_id="inventory-0"),
    )
    for _ in range(20):
        worker.run_once(0.01)
    assert len(bus.records(RESERVED)) == 3
    return bus, worker, shop


def test_the_last_offsets_are_committed_again_after_an_outage_and_change_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Producer lost in an outage, partitions assigned: one more transaction, same offsets."""
    bus, worker, shop = _worker_with_three_orders_handled()
    committed = bus.committed("inventory")
    assert sum(committed.values()) == 3
    delivery: Any = worker.delivery
    assert delivery._last_offsets == committed
    delivery._close_producer()  # its re-creation failed while the broker was down
    delivery.assign(sorted(committed))
    with caplog.at_level(logging.INFO):
        worker.run_once(0.01)  # tick: created again, the last offsets committed once more
    assert delivery._producer is not None
    assert "committing the last transaction's offsets of 1 partition(s) again" in caplog.text
    assert bus.committed("inventory") == committed
    for _ in range(5):
        worker.run_once(0.01)
    worker.close()
    assert len(bus.records(RESERVED)) == 3
    assert shop.state.count("inventory.reserve") == 3


def test_nothing_is_committed_again_after_a_failed_transaction() -> None:
    """A transaction that failed leaves no offsets to re-commit: its outcome is unknown."""
    _bus, worker, _shop = _worker_with_three_orders_handled()
    delivery: Any = worker.delivery
    producer = delivery.producer
    producer.begin_transaction()  # a transaction already open: the next one fails
    with pytest.raises(TransactionError):
        delivery._transaction([], dict(delivery._last_offsets))
    assert delivery._last_offsets == {}
    worker.close()


def test_a_partition_that_went_to_another_member_is_not_committed_again() -> None:
    """Revoked and not in the next assignment: its offset leaves the re-commit for good.

    Another member may have advanced that partition; re-committing this replica's older
    offset would rewind the group. One revoked and assigned again by the same rebalance
    (the eager protocol revokes everything, then assigns) stays a candidate.
    """
    _bus, worker, _shop = _worker_with_three_orders_handled()
    delivery: Any = worker.delivery
    owned = dict(delivery._last_offsets)
    partitions = sorted(owned)
    delivery.revoke(partitions)
    delivery.assign(partitions)  # eager: the same partitions come straight back
    assert delivery._last_offsets == owned
    delivery.revoke(partitions)
    delivery.assign([])  # they went to another member
    assert delivery._last_offsets == {}
    delivery.assign(partitions)  # and came back by a later rebalance
    assert delivery._last_offsets == {}
    worker.close()
