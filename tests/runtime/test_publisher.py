"""The Publisher opens sagas through the outbox, atomically with the caller's database work."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from choreo.errors import ConfigurationError
from choreo.model.envelope import Envelope, Role, headers_to_dict
from choreo.runtime import Publisher, SagaStarter, SqliteInbox, WorkerConfig
from choreo.runtime.tracing import parse_traceparent
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced, StockReserved
from .fixtures.shop import Shop
from .helpers import ControlledTransport

TOPIC = "test.runtime.OrderPlaced"


def _envelope(bus: MemoryBus, index: int = 0) -> Envelope:
    return Envelope.from_headers(headers_to_dict(bus.records(TOPIC)[index].headers))


def test_start_publishes_a_start_event_with_a_new_correlation_id(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """The start event has role start, step orders.start, a trace, and cid = its own id."""
    cid = Publisher(shop.orders, transport, serde).start(
        shop.saga, OrderPlaced("o1", "book", 1, 100)
    )
    envelope = _envelope(bus)
    assert envelope.role is Role.START
    assert envelope.step == "orders.start"
    assert envelope.saga == "Fulfilment"
    assert envelope.service == "orders"
    assert envelope.correlation_id == envelope.event_id == cid
    assert envelope.causation_id is None
    assert parse_traceparent(envelope.traceparent or "") is not None
    assert bus.records(TOPIC)[0].key == cid.encode()
    assert serde.decode(TOPIC, bus.records(TOPIC)[0].value) == OrderPlaced("o1", "book", 1, 100)


def test_start_accepts_a_correlation_id_and_tracing_can_be_off(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A given correlation id is used as is; tracing=False leaves out the traceparent."""
    publisher = SagaStarter(shop.orders, transport, serde, config=WorkerConfig(tracing=False))
    assert publisher.start(shop.saga, OrderPlaced("o", "b", 1, 1), correlation_id="cid-7") == (
        "cid-7"
    )
    envelope = _envelope(bus)
    assert envelope.correlation_id == "cid-7" != envelope.event_id
    assert envelope.traceparent is None


def test_start_refuses_sagas_the_service_does_not_start_and_wrong_events(
    shop: Shop, transport: MemoryTransport, serde: Any
) -> None:
    """Only a declared starter may start a saga, and only with its start event."""
    with pytest.raises(ConfigurationError, match="does not start saga"):
        Publisher(shop.payment, transport, serde).start(shop.saga, OrderPlaced("o", "b", 1, 1))
    with pytest.raises(ConfigurationError, match=r"starts with test\.runtime\.OrderPlaced"):
        Publisher(shop.orders, transport, serde).start(shop.saga, StockReserved("o", "b", 1))


def test_db_work_commits_with_the_event_or_not_at_all(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any, tmp_path: Path
) -> None:
    """The order row and the start event are stored together; a failing db_work stores neither."""
    inbox = SqliteInbox(tmp_path / "orders.db")
    inbox.connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    publisher = Publisher(shop.orders, transport, serde, inbox=inbox)

    def insert(order_id: str) -> Any:
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO orders VALUES (?)", (order_id,))

        return work

    publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 1), db_work=insert("o1"))
    with pytest.raises(sqlite3.IntegrityError):
        publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 1), db_work=insert("o1"))
    rows = inbox.connection.execute("SELECT id FROM orders").fetchall()
    assert rows == [("o1",)]
    assert len(bus.records(TOPIC)) == 1
    assert inbox.pending(publisher.origin) == []


def test_a_start_that_could_not_be_delivered_is_published_later(
    shop: Shop, bus: MemoryBus, serde: Any, tmp_path: Path
) -> None:
    """With a durable outbox a delivery failure is kept and flushed by the next publisher."""
    path = tmp_path / "orders.db"
    transport = ControlledTransport(MemoryTransport(bus))
    transport.control.fail_flush = 1
    first = Publisher(shop.orders, transport, serde, inbox=SqliteInbox(path))
    cid = first.start(shop.saga, OrderPlaced("o1", "book", 1, 1))
    assert len(SqliteInbox(path).pending(first.origin)) == 1

    second = Publisher(shop.orders, transport, serde, inbox=SqliteInbox(path))
    second.flush()
    ids = [headers_to_dict(r.headers)["choreo-id"] for r in bus.records(TOPIC)]
    assert ids[-1] == cid.encode()
    assert SqliteInbox(path).pending(second.origin) == []


def test_a_memory_outbox_raises_delivery_failures(shop: Shop, bus: MemoryBus, serde: Any) -> None:
    """Without a durable outbox a delivery failure is raised to the caller."""
    transport = ControlledTransport(MemoryTransport(bus))
    transport.control.fail_flush = 1
    publisher = Publisher(shop.orders, transport, serde)
    with pytest.raises(Exception, match="unavailable"):
        publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 1))
    publisher.close()
    with pytest.raises(ConfigurationError, match="closed"):
        publisher.start(shop.saga, OrderPlaced("o2", "book", 1, 1))


def test_a_batch_publishes_each_start_at_once_and_flushes_once_at_the_end(
    shop: Shop, bus: MemoryBus, serde: Any, tmp_path: Path
) -> None:
    """Starts inside batch() commit and publish one by one; the block's end flushes once."""
    inbox = SqliteInbox(tmp_path / "orders.db")
    inbox.connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    transport = ControlledTransport(MemoryTransport(bus))
    publisher = Publisher(shop.orders, transport, serde, inbox=inbox)

    def insert(order_id: str) -> Any:
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO orders VALUES (?)", (order_id,))

        return work

    with publisher.batch():
        cids = []
        for n in range(5):
            cids.append(
                publisher.start(
                    shop.saga,
                    OrderPlaced(f"o{n}", "book", 1, 1),
                    correlation_id=f"o{n}",
                    db_work=insert(f"o{n}"),
                )
            )
            assert len(bus.records(TOPIC)) == n + 1  # published at once, not yet flushed
        with publisher.batch():  # nested: the outer block flushes
            publisher.start(shop.saga, OrderPlaced("o5", "book", 1, 1), correlation_id="o5")
        assert transport.control.flushes == 0
        assert len(inbox.pending(publisher.origin)) == 6  # stored until acknowledged
    assert transport.control.flushes == 1
    assert [r.key for r in bus.records(TOPIC)] == [f"o{n}".encode() for n in range(6)]
    assert cids == [f"o{n}" for n in range(5)]
    assert inbox.connection.execute("SELECT count(*) FROM orders").fetchone() == (5,)
    assert inbox.pending(publisher.origin) == []


def test_a_batch_keeps_what_was_started_when_the_block_raises(
    shop: Shop, bus: MemoryBus, serde: Any, tmp_path: Path
) -> None:
    """Starts before an error stay started (and flushed); a failing db_work stores nothing."""
    inbox = SqliteInbox(tmp_path / "orders.db")
    inbox.connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    transport = ControlledTransport(MemoryTransport(bus))
    publisher = Publisher(shop.orders, transport, serde, inbox=inbox)

    def insert_twice(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO orders VALUES ('dup')")
        db.execute("INSERT INTO orders VALUES ('dup')")

    with pytest.raises(sqlite3.IntegrityError), publisher.batch():
        publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 1), correlation_id="kept")
        publisher.start(shop.saga, OrderPlaced("o2", "book", 1, 1), db_work=insert_twice)
    assert transport.control.flushes == 1
    assert [r.key for r in bus.records(TOPIC)] == [b"kept"]
    assert inbox.connection.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    assert inbox.pending(publisher.origin) == []


def test_a_batch_whose_flush_fails_keeps_its_starts_in_a_durable_outbox(
    shop: Shop, bus: MemoryBus, serde: Any, tmp_path: Path
) -> None:
    """A failed flush at the block's end leaves the events stored; flush() sends them later."""
    inbox = SqliteInbox(tmp_path / "orders.db")
    transport = ControlledTransport(MemoryTransport(bus))
    publisher = Publisher(shop.orders, transport, serde, inbox=inbox)
    transport.control.fail_flush = 1
    with publisher.batch():
        publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 1), correlation_id="c1")
    assert [r.id for r in inbox.pending(publisher.origin)] != []
    publisher.flush()
    assert inbox.pending(publisher.origin) == []
    assert [r.key for r in bus.records(TOPIC)] == [b"c1", b"c1"]  # the same event id twice
    assert len({dict(r.headers)["choreo-id"] for r in bus.records(TOPIC)}) == 1


def test_start_many_starts_one_saga_per_event_with_one_flush(
    shop: Shop, bus: MemoryBus, serde: Any
) -> None:
    """start_many returns one correlation id per event, given or new, and flushes once."""
    transport = ControlledTransport(MemoryTransport(bus))
    publisher = Publisher(shop.orders, transport, serde)
    events = [OrderPlaced(f"o{n}", "book", n + 1, 10) for n in range(3)]
    cids = publisher.start_many(shop.saga, events, correlation_ids=["a", None, "c"])
    assert transport.control.flushes == 1
    assert cids[0] == "a" and cids[2] == "c"
    envelopes = [_envelope(bus, n) for n in range(3)]
    assert cids[1] == envelopes[1].event_id == envelopes[1].correlation_id
    assert [e.correlation_id for e in envelopes] == cids
    assert [serde.decode(TOPIC, r.value) for r in bus.records(TOPIC)] == events
    calls: list[Any] = []
    assert len(publisher.start_many(shop.saga, events[:2], db_work=calls.append)) == 2
    assert calls == [None]  # once, with the (memory) inbox's connection
    assert transport.control.flushes == 2
    with pytest.raises(ConfigurationError, match="3 events but 1 correlation ids"):
        publisher.start_many(shop.saga, events, correlation_ids=["x"])
    with pytest.raises(ConfigurationError, match="starts with"):
        publisher.start_many(shop.saga, [StockReserved("o", "b", 1)])
    assert len(bus.records(TOPIC)) == 5
