"""Two replicas of inventory and of payment share one PostgreSQL store on a real broker.

Stock 10, 40 orders of one unit: exactly 10 are reserved, the stock ends at 0 (never
below), every order is decided once, and each reserved order is charged exactly once; the
shop's audit (:mod:`services.audit`) reads the shared store and agrees.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from choreo.choreography.service import Service
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.runtime.serdes import serde_for
from choreo.store import MemoryStore, execute
from choreo.store.guard import group_members
from choreo.store.postgres import PostgresStore
from choreo.transports.factory import open_transport
from services import events as ev
from services import inventory, order, payment
from services.audit import audit
from services.config import ServiceConfig
from services.demo import find_schemas_dir
from services.saga import OrderFulfillment

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 6
ORDERS = 40
STOCK = 10


def _order(order_id: str) -> ev.OrderCreated:
    return ev.OrderCreated(
        order_id=order_id,
        customer_id="c-1",
        items=[ev.LineItem(sku="mug", quantity=1, unit_price_cents=500)],
        total_cents=500,
        currency="EUR",
        created_at=0,
    )


def _scalar(store: PostgresStore, sql: str, params: tuple[Any, ...] = ()) -> Any:
    store.begin()
    try:
        row = execute(store.connection, sql, params).fetchone()
    finally:
        store.commit()
    return row[0]


def _members(transport: Any, group: str) -> list[Any]:
    """Return the group's members; none while a fresh broker's coordinator still loads."""
    try:
        return group_members(transport, group) or []
    except Exception:  # describe timed out (coordinator load in progress): ask again
        return []


def _both_own_partitions(transport: Any, group: str) -> bool:
    """Whether ``group`` has two members and each was assigned partitions (the rebalance
    that the second one's join started is over)."""
    members = _members(transport, group)
    return len(members) == 2 and all(m.partitions > 0 for m in members)


@pytest.fixture
def replicas(
    kafka_bootstrap: str, postgres_url: str
) -> Iterator[Callable[[Service, int], list[Worker]]]:
    """Yield a starter of N worker threads of a service, each with its own PostgresStore."""
    prefix = f"rep{uuid.uuid4().hex[:8]}."
    schema = f"rep_{uuid.uuid4().hex[:10]}"
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    started: list[tuple[Worker, threading.Thread, threading.Event, PostgresStore]] = []

    def start(service: Service, count: int) -> list[Worker]:
        serde = serde_for([service], schemas_dir=find_schemas_dir())
        workers = []
        for _ in range(count):
            store = PostgresStore(postgres_url, schema=schema)
            config = WorkerConfig(
                group_id=f"{prefix}{service.name}",
                topic_naming=lambda t: f"{prefix}{t}",
                deadletter_naming=lambda name: f"{prefix}{name}.deadletter",
                topic_partitions=PARTITIONS,
                max_poll_records=5,  # small batches: the replicas interleave on the stock row
            )
            worker = Worker(service, transport, serde, config=config, inbox=store)
            stop = threading.Event()
            thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
            thread.start()
            started.append((worker, thread, stop, store))
            workers.append(worker)
        return workers

    start.prefix = prefix  # type: ignore[attr-defined]
    start.schema = schema  # type: ignore[attr-defined]
    start.transport = transport  # type: ignore[attr-defined]
    yield start
    for _, _, stop, _ in started:
        stop.set()
    for _, thread, _, store in started:
        thread.join(30)
        store.close()


def test_two_replicas_never_oversell_or_charge_twice(replicas: Any, postgres_url: str) -> None:
    """40 one-unit orders against 10 in stock on 2+2 replicas: 10 reserved, 10 charged once."""
    config = ServiceConfig(stock={"mug": STOCK})
    replicas(inventory.create(config), 2)
    replicas(payment.create(config), 2)
    prefix, transport = replicas.prefix, replicas.transport
    deadline = time.monotonic() + 90
    for name in ("inventory", "payment"):  # both replicas own partitions before the orders
        while not _both_own_partitions(transport, f"{prefix}{name}"):
            assert time.monotonic() < deadline, f"{name}'s replicas never both owned partitions"
            time.sleep(0.2)

    orders_service = order.create(config)
    serde = serde_for([orders_service], schemas_dir=find_schemas_dir())
    publisher = Publisher(
        orders_service,
        transport,
        serde,
        inbox=MemoryStore(),
        config=WorkerConfig(topic_naming=lambda t: f"{prefix}{t}"),
    )
    with publisher.batch():
        for i in range(ORDERS):
            publisher.start(OrderFulfillment, _order(f"o-{i:03d}"), correlation_id=f"o-{i:03d}")
    publisher.close()

    check = PostgresStore(postgres_url, schema=replicas.schema)
    try:
        while True:
            decided = _scalar(check, "SELECT count(*) FROM inventory_reservations")
            charged = _scalar(check, "SELECT count(*) FROM payments")
            if decided == ORDERS and charged >= STOCK:
                break
            assert time.monotonic() < deadline + 120, (decided, charged)
            time.sleep(0.5)
        time.sleep(2)  # anything still in flight would show now
        reserved = _scalar(
            check, "SELECT count(*) FROM inventory_reservations WHERE status = 'reserved'"
        )
        available = _scalar(check, "SELECT available FROM inventory_stock WHERE sku = 'mug'")
        moved = _scalar(check, "SELECT COALESCE(SUM(delta), 0) FROM inventory_movements")
        charges = _scalar(check, "SELECT count(*) FROM payment_ledger WHERE kind = 'charge'")
        charged_orders = _scalar(
            check, "SELECT count(DISTINCT order_id) FROM payment_ledger WHERE kind = 'charge'"
        )
        payments = _scalar(check, "SELECT count(*) FROM payments")
        seeded = _scalar(
            check,
            "SELECT count(*) FROM choreo_schema_version WHERE component = 'service:inventory'",
        )
    finally:
        check.close()
    assert (reserved, available, moved) == (STOCK, 0, -STOCK)
    assert (charges, charged_orders, payments) == (STOCK, STOCK, STOCK)
    assert seeded == 2  # tables and initial stock applied once for both replicas
    for name in ("inventory", "payment"):  # both replicas of each service held partitions
        members = group_members(transport, f"{prefix}{name}") or []
        assert len(members) == 2
        assert all(m.partitions > 0 for m in members), members

    # the shop's audit reads the same shared store: one URL covers both replicas
    stores = {name: f"{postgres_url}?schema={replicas.schema}" for name in ("inventory", "payment")}
    report = audit(stores)
    assert report.ok, report.problems
    assert (report.facts["charges"], report.facts["reservations"]) == (STOCK, ORDERS)
    check = PostgresStore(postgres_url, schema=replicas.schema)
    check.begin()  # plant a second charge of one order: the audit must see it
    execute(
        check.connection,
        "INSERT INTO payment_ledger (order_id, kind, amount_cents, cause_event_id, at_ms)"
        " SELECT order_id, kind, amount_cents, 'planted', at_ms FROM payment_ledger LIMIT 1",
    )
    check.commit()
    check.close()
    planted = audit(stores)
    assert planted.problem_count == 1
    assert "2 charges in the payment ledger" in planted.problems[0]
