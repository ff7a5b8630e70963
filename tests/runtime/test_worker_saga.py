"""The worker runs a saga of five services end to end on the memory transport."""

from __future__ import annotations

import itertools
from typing import Any

from choreo.model.envelope import Header, Role, headers_to_dict
from choreo.runtime import Publisher, Worker, WorkerConfig, derived_event_id
from choreo.runtime.tracing import parse_traceparent
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced
from .fixtures.serdes import JsonSerde
from .fixtures.shop import ALL_EVENTS, Shop
from .helpers import envelopes, run_until_idle, saga_records

FAST = WorkerConfig(poll_timeout=0.0)


def _run_shop(
    shop: Shop, transport: MemoryTransport, serde: Any, *orders: OrderPlaced
) -> list[str]:
    """Start one saga per order, run every service until idle, return the correlation ids."""
    workers = [Worker(s, transport, serde, config=FAST) for s in shop.services]
    publisher = Publisher(shop.orders, transport, serde)
    cids = [publisher.start(shop.saga, order) for order in orders]
    run_until_idle(workers)
    for worker in workers:
        worker.close()
    return cids


def test_saga_completes_and_envelopes_propagate(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A completed saga's events share the correlation id, chain causation ids and trace id."""
    (cid,) = _run_shop(shop, transport, serde, OrderPlaced("o1", "book", 2, 200))
    records = saga_records(bus, cid)
    chain = envelopes(records)
    assert [e.event_type.rsplit(".", 1)[1] for e in chain] == [
        "OrderPlaced",
        "StockReserved",
        "PaymentAuthorized",
        "ShipmentScheduled",
        "OrderCompleted",
        "CustomerNotified",
    ]
    assert [e.role for e in chain] == [
        Role.START,
        Role.STEP,
        Role.STEP,
        Role.STEP,
        Role.COMPLETED,
        Role.NOTICE,
    ]
    assert [e.step for e in chain] == [
        "orders.start",
        "inventory.reserve",
        "payment.authorize",
        "shipping.schedule",
        "orders.complete",
        "notifier.tell",
    ]
    assert {e.correlation_id for e in chain} == {cid}
    assert {e.saga for e in chain} == {"Fulfilment"}
    for parent, child in itertools.pairwise(chain):
        assert child.causation_id == parent.event_id
        assert child.event_id == derived_event_id(parent.event_id, child.step or "", 0)
    traces = [parse_traceparent(e.traceparent or "") for e in chain]
    assert all(t is not None for t in traces)
    assert len({t[0] for t in traces if t}) == 1
    assert len({t[1] for t in traces if t}) == len(chain)
    assert all(r.key == cid.encode() for r in records)


def test_failure_compensates_completed_steps_in_reverse_order(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A failed pivot undoes payment then inventory, and the saga ends failed."""
    shop.state.unshippable.add("o9")
    (cid,) = _run_shop(shop, transport, serde, OrderPlaced("o9", "lamp", 3, 300))
    chain = envelopes(saga_records(bus, cid))
    assert [e.role for e in chain] == [
        Role.START,
        Role.STEP,
        Role.STEP,
        Role.FAILURE,
        Role.COMPENSATION,
        Role.COMPENSATION,
        Role.FAILED,
        Role.NOTICE,
    ]
    forward = [e.step for e in chain if e.role is Role.STEP]
    undone = [e.step for e in chain if e.role is Role.COMPENSATION]
    assert forward == ["inventory.reserve", "payment.authorize"]
    assert undone == list(reversed(forward))
    assert chain[3].step == "shipping.schedule"
    assert chain[6].step == "orders.start"
    calls = [step for step, _ in shop.state.calls]
    assert (
        calls.index("payment.void")
        < calls.index("inventory.release")
        < calls.index("orders.cancel")
    )
    assert shop.state.stock["lamp"] == 97  # reserved, and the fixture does not restock


def test_declined_payment_is_a_failure_returned_by_the_handler(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A step that returns its failure event starts compensation like a raised failure."""
    shop.state.payment_limit = 100
    (cid,) = _run_shop(shop, transport, serde, OrderPlaced("o2", "book", 5, 500))
    chain = envelopes(saga_records(bus, cid))
    assert [(e.role, e.step) for e in chain[:5]] == [
        (Role.START, "orders.start"),
        (Role.STEP, "inventory.reserve"),
        (Role.FAILURE, "payment.authorize"),
        (Role.COMPENSATION, "inventory.reserve"),
        (Role.FAILED, "orders.start"),
    ]


def test_many_sagas_complete_independently(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Fifty concurrent sagas each run every step exactly once."""
    orders = [OrderPlaced(f"o{i}", "book", 1, 100) for i in range(50)]
    cids = _run_shop(shop, transport, serde, *orders)
    for cid in cids:
        assert envelopes(saga_records(bus, cid))[-2].role is Role.COMPLETED
    for order in orders:
        assert shop.state.count("inventory.reserve", order.order_id) == 1
        assert shop.state.count("orders.complete", order.order_id) == 1


def test_one_topic_for_every_type_skips_events_of_other_services(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """With a single shared topic, each worker ignores the types it does not handle."""
    config = WorkerConfig(poll_timeout=0.0, topic_naming=lambda event_type: "shop.all")
    workers = [Worker(s, transport, serde, config=config) for s in shop.services]
    publisher = Publisher(shop.orders, transport, serde, config=config)
    cid = publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
    run_until_idle(workers)
    assert [w.topics for w in workers] == [("shop.all",)] * 5
    roles = [headers_to_dict(r.headers)[Header.ROLE] for r in bus.records("shop.all")]
    assert roles == [b"start", b"step", b"step", b"step", b"completed", b"notice"]
    assert all(not t.startswith("choreo.deadletter") or not bus.records(t) for t in bus.topics())
    assert cid


def test_any_serde_with_the_protocol_works(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport
) -> None:
    """The worker needs only encode/decode: a JSON serde runs the same saga."""
    (cid,) = _run_shop(shop, transport, JsonSerde(ALL_EVENTS), OrderPlaced("o1", "book", 1, 100))
    chain = envelopes(saga_records(bus, cid))
    assert chain[-2].role is Role.COMPLETED
    assert bus.records("test.runtime.OrderPlaced")[0].value.startswith(b"{")  # type: ignore[union-attr]
