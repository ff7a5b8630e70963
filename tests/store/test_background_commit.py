"""A batch's COMMIT in the background, on a real PostgreSQL server: a failed one rewinds.

The PostgreSQL store commits batch N on a background thread while the worker handles
batch N+1 on a second connection. These tests make one COMMIT fail (a deferred trigger
on the outbox raises, or ends its own backend, at COMMIT time) while the next batch is
handled on top of it, and check the guarantee: the batch on top is rolled back with it,
the consumer rewinds, both are handled again, nothing is lost or published twice, no
handler write is kept twice, and offsets end where the records end.

The transport is the in-process memory bus (the store and the delivery are under test;
the bus makes the batches and the moment of failure deterministic).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from choreo.choreography.service import Saga, Service
from choreo.model.context import Context
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.store import Migration
from choreo.store.postgres import PostgresStore
from choreo.transports.memory import MemoryBus, MemoryTransport
from tests.runtime.fixtures.events import OrderCompleted, OrderFailed, OrderPlaced, StockReserved
from tests.runtime.fixtures.serdes import avro_serde

ORDERS = 20
BATCH = 5  # 4 batches; the second one's COMMIT fails while the third is handled
RESERVED = "test.runtime.StockReserved"

# the outbox's n-th insert since the trigger was created fails at COMMIT (deferred);
# a sequence is not rolled back, so the retried batch's insert passes
_FAILING_COMMIT = """
CREATE SEQUENCE {schema}.outbox_inserts;
CREATE FUNCTION {schema}.fail_a_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('{schema}.outbox_inserts') = {nth} THEN
    {action};
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER fail_a_commit AFTER INSERT ON {schema}.choreo_outbox
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.fail_a_commit();
"""
ACTIONS = {
    "error": "RAISE EXCEPTION 'injected COMMIT failure'",
    # the backend ends itself inside the COMMIT: the connection is lost mid-overlap
    "backend terminated": "PERFORM pg_terminate_backend(pg_backend_pid())",
}


def _service(calls: Counter[str], *, writes: bool) -> tuple[Service, Service, Saga]:
    """Return (orders, inventory, saga): inventory reserves, writing a row when ``writes``."""
    saga = Saga("Fulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    orders = Service("orders", sagas=[saga])
    orders.starts(saga)
    table = Migration(1, "reservations", "CREATE TABLE reservations (order_id TEXT PRIMARY KEY)")
    inventory = Service("inventory", sagas=[saga], migrations=[table])

    @inventory.step(on=OrderPlaced, emits=StockReserved)
    def reserve(event: OrderPlaced, ctx: Context) -> StockReserved:
        calls[event.order_id] += 1
        if writes:  # a second kept row would violate the key: no write is kept twice
            ctx.db.execute("INSERT INTO reservations (order_id) VALUES (%s)", (event.order_id,))
        return StockReserved(event.order_id, event.sku, event.quantity)

    return orders, inventory, saga


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """Yield a fresh schema name (dropped afterwards)."""
    name = f"bg_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _query(url: str, schema: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.format(schema=schema)).fetchall()


@pytest.mark.parametrize("writes", [False, True], ids=["no SQL", "ctx.db writes"])
@pytest.mark.parametrize("failure", list(ACTIONS))
def test_a_failed_background_commit_rewinds_the_batch_handled_on_top_of_it(
    postgres_url: str, schema: str, failure: str, writes: bool
) -> None:
    """Batch 2's COMMIT fails while batch 3 is handled: both come back, once each in the end."""
    bus = MemoryBus()
    transport = MemoryTransport(bus)
    serde = avro_serde()
    calls: Counter[str] = Counter()
    orders, inventory, saga = _service(calls, writes=writes)
    store = PostgresStore(postgres_url, schema=schema)
    config = WorkerConfig(poll_timeout=0.0, max_poll_records=BATCH, commit_interval=0.0)
    worker = Worker(inventory, transport, serde, config=config, inbox=store)
    worker.start()  # the service's migrations, then the trigger on choreo's outbox
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(_FAILING_COMMIT.format(schema=schema, nth=2, action=ACTIONS[failure]))
    publisher = Publisher(orders, transport, serde)
    for i in range(ORDERS):
        publisher.start(saga, OrderPlaced(f"o{i:02d}", "book", 1, 100))

    failures: list[Exception] = []
    try:
        for _ in range(50):
            try:
                if not worker.run_once(0.0) and len(bus.records(RESERVED)) >= ORDERS:
                    break
            except psycopg.Error as exc:
                failures.append(exc)
        else:
            pytest.fail(f"the worker did not finish: {len(bus.records(RESERVED))} published")
    finally:
        worker.close()
    try:
        assert len(failures) == 1, failures
        # batch 2 (o05-o09) failed at COMMIT; batch 3 (o10-o14) was handled on top of it,
        # rolled back with it and handled again; the others once
        again = {f"o{i:02d}" for i in range(5, 15)}
        assert calls == Counter({f"o{i:02d}": 2 if f"o{i:02d}" in again else 1 for i in range(20)})
        published = Counter(
            headers_to_dict(r.headers)[Header.EVENT_ID] for r in bus.records(RESERVED)
        )
        assert len(published) == ORDERS  # none lost
        assert set(published.values()) == {1}  # none published twice
        inbox = "SELECT count(*), count(DISTINCT event_id) FROM {schema}.choreo_inbox"
        assert _query(postgres_url, schema, inbox) == [(ORDERS, ORDERS)]
        if writes:
            assert _query(postgres_url, schema, "SELECT count(*) FROM {schema}.reservations") == [
                (ORDERS,)
            ]
        assert sum(bus.committed(worker.group_id).values()) == ORDERS
        assert store.outbox_size(worker.origin) == 0
    finally:
        store.close()
