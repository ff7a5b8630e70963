"""An exactly-once worker settles its transactional id when it is assigned partitions.

A transaction that a worker's transactional id left open (the broker died between the
batch's ``send_offsets_to_transaction`` and its commit) holds the consumer-group offsets it
sent pending: with ``read_committed`` the group's consumers fetch no committed offset of
those partitions (``UNSTABLE_OFFSET_COMMIT``, retried by the client) and so read none of
their records until it ends. A worker whose producer could not be created again while the
broker was down used to create it at its next batch, which could not come: it waited for
``transaction.timeout.ms``. Seen in chaos ``eos-broker-restart`` as notifications that
came only after the harness stopped waiting. The worker now registers its transactional
id again as soon as partitions are assigned, which aborts that transaction at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from choreo.choreography.service import Saga, Service
from choreo.runtime import Worker
from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentProducer

from .fixtures.events import OrderCompleted, OrderFailed, OrderPlaced, StockReserved
from .fixtures.serdes import avro_serde
from .test_durability_kafka import (
    ORDERS,
    RESERVED,
    _config,
    _prefix,
    _publish_orders,
    _read_all,
    _transport,
)

pytestmark = pytest.mark.kafka

BOUND = 30.0
"""Seconds to handle the orders: far below the open transaction's own timeout (15 min)."""


def run_until(worker: Worker, done: Callable[[], bool], bound: float) -> None:
    """Run ``worker`` on a thread until ``done()``, ``bound`` seconds, or the worker ends."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + bound
        while not done() and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)


def _reserving_service() -> tuple[Service, Counter[str]]:
    """A one-step service: every order reserves its stock."""
    calls: Counter[str] = Counter()
    saga = Saga("Fulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    service = Service("inventory", sagas=[saga])

    @service.step(on=OrderPlaced, emits=StockReserved)
    def reserve(event: OrderPlaced) -> StockReserved:
        calls[event.order_id] += 1
        return StockReserved(event.order_id, event.sku, event.quantity)

    return service, calls


def _leave_transaction_open(bootstrap: str, transactional_id: str, worker: Worker) -> Any:
    """Open a transaction of ``transactional_id`` holding the group's offset of ORDERS[0].

    The offsets go with the metadata of a consumer of the group that is no member (no
    instance id, no generation), as a producer of an older client would send them: the
    broker takes them whether or not the worker's static consumer joined meanwhile.
    """
    config = KafkaConfig(
        bootstrap_servers=bootstrap,
        client_id="choreo-open-transaction",
        producer={"transaction.timeout.ms": 900_000},  # the broker would wait 15 min
    )
    outsider = _transport("confluent", bootstrap).consumer(worker.group_id)
    zombie = ConfluentProducer(config, transactional_id=transactional_id)
    try:
        zombie.begin_transaction()
        zombie.publish(worker.config.topic_naming(RESERVED), b"never committed", key=b"z")
        zombie.send_offsets_to_transaction(
            {TopicPartition(worker.config.topic_naming(ORDERS), 0): 1}, outsider, 30.0
        )
    finally:
        outsider.close()
    return zombie


def test_an_assignment_aborts_what_the_workers_transactional_id_left_open(
    kafka_bootstrap: str,
) -> None:
    """The worker's producer is missing (its re-creation failed) and its id holds a transaction
    with the group's offsets: once assigned, the worker registers the id again (aborting the
    transaction) and handles every order long before the transaction's own timeout.

    About 15 s on a real broker: a static member's first join, a transactional id
    registered three times and the coordinator's abort."""
    prefix = _prefix()
    transport = _transport("confluent", kafka_bootstrap)
    transport.create_topics([f"{prefix}{ORDERS}", f"{prefix}{RESERVED}"], partitions=1)
    _publish_orders(transport, prefix, 3)
    service, calls = _reserving_service()
    worker = Worker(
        service,
        transport,
        avro_serde(),
        config=_config(prefix, exactly_once=True, instance_id="inventory-0"),
    )
    worker.start()
    delivery: Any = worker.delivery
    # The state a broker outage leaves: the batch's transaction failed, and creating the
    # producer again failed too (the broker was down), so the next batch would create it.
    delivery._close_producer()
    zombie = _leave_transaction_open(kafka_bootstrap, delivery.transactional_id, worker)
    try:
        run_until(worker, lambda: len(calls) >= 3, BOUND)
        handled = len(calls)
    finally:
        zombie.close()
    assert handled == 3, f"{handled} of 3 orders handled within {BOUND:.0f} s"
    reserved = _read_all(kafka_bootstrap, f"{prefix}{RESERVED}", 3)
    assert sorted(r.value != b"never committed" for r in reserved) == [True, True, True]
