"""SagaTestKit runs a choreography on one memory bus, in lockstep, for users' own tests."""

from __future__ import annotations

import pytest
from runtime.fixtures.events import (
    CustomerNotified,
    OrderCompleted,
    OrderFailed,
    OrderPlaced,
    PaymentVoided,
    StockReleased,
    StockReserved,
)
from runtime.fixtures.serdes import JsonSerde
from runtime.fixtures.shop import ALL_EVENTS, SCHEMAS_DIR, build_shop

from choreo.avro.loader import load_directory
from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError
from choreo.model.envelope import Role
from choreo.runtime import DeadLetterReason
from choreo.testing import SagaTestKit
from choreo.transports.memory import MemoryBus, MemoryTransport


def test_a_completed_saga_can_be_asserted_event_by_event() -> None:
    """start, run_until_idle, then the saga's events come back decoded, in order."""
    shop = build_shop()
    with SagaTestKit(shop.services, schemas_dir=SCHEMAS_DIR) as kit:
        cid = kit.start(shop.saga, OrderPlaced("o1", "book", 2, 200))
        assert kit.run_until_idle() == 5
        completed = kit.assert_completed(cid)
        assert completed.event == OrderCompleted("o1")
        (reserved,) = kit.assert_emitted(cid, StockReserved, times=1)
        assert reserved.event == StockReserved("o1", "book", 2)
        assert reserved.envelope.step == "inventory.reserve"
        assert [e.role for e in kit.events(cid)] == [
            Role.START,
            Role.STEP,
            Role.STEP,
            Role.STEP,
            Role.COMPLETED,
            Role.NOTICE,
        ]
        kit.assert_not_emitted(cid, OrderFailed)
        assert kit.dead_letters() == []
        assert kit.run_until_idle() == 0


def test_a_failed_saga_shows_its_compensations_in_reverse_order() -> None:
    """A failing pivot yields failure, two compensations in reverse order, then failed."""
    shop = build_shop()
    shop.state.unshippable.add("o2")
    kit = SagaTestKit(shop.services, registry=load_directory(SCHEMAS_DIR))
    ok = kit.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
    bad = kit.start(shop.saga, OrderPlaced("o2", "book", 1, 100))
    kit.run_until_idle()
    kit.assert_completed(ok)
    kit.assert_failed(bad)
    assert kit.event_types(bad)[3:7] == [
        "test.runtime.ShipmentFailed",
        "test.runtime.PaymentVoided",
        "test.runtime.StockReleased",
        "test.runtime.OrderFailed",
    ]
    undone = [e.envelope.step for e in kit.events(bad) if e.role is Role.COMPENSATION]
    assert undone == ["payment.authorize", "inventory.reserve"]
    assert kit.assert_emitted(bad, CustomerNotified)[0].event == CustomerNotified(
        "o2", "OrderFailed"
    )
    kit.close()


def test_failed_assertions_print_the_saga_timeline() -> None:
    """assert_completed on a failed saga raises with every event's role, type and step."""
    shop = build_shop()
    shop.state.payment_limit = 0
    with SagaTestKit(shop.services, schemas_dir=SCHEMAS_DIR) as kit:
        cid = kit.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
        kit.run_until_idle()
        with pytest.raises(AssertionError, match=r"(?s)did not complete.*failure.*PaymentDecl"):
            kit.assert_completed(cid)
        with pytest.raises(AssertionError, match=r"expected test\.runtime\.PaymentVoided"):
            kit.assert_emitted(cid, PaymentVoided)
        with pytest.raises(AssertionError, match="StockReleased was emitted"):
            kit.assert_not_emitted(cid, StockReleased)
        with pytest.raises(AssertionError, match="did not fail"):
            kit.assert_failed("no-such-saga")


def test_dead_letters_and_handler_retries_are_visible() -> None:
    """A poison record and an exhausted step both show up in dead_letters()."""
    shop = build_shop(retry=None)
    shop.state.broken.add("payment.authorize")
    with SagaTestKit(shop.services, schemas_dir=SCHEMAS_DIR) as kit:
        kit.publish_raw("test.runtime.OrderPlaced", b"garbage", key=b"k")
        cid = kit.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
        kit.run_until_idle()
        letters = kit.dead_letters()
        assert {d.reason for d in letters} == {
            DeadLetterReason.BAD_ENVELOPE,
            DeadLetterReason.RETRIES_EXHAUSTED,
        }
        (exhausted,) = kit.dead_letters(cid)
        assert exhausted.service == "payment"
        assert exhausted.attempts == 5  # the kit's default budget, without waiting
        assert shop.state.count("payment.authorize") == 5


def test_run_until_idle_stops_an_endless_ping_pong() -> None:
    """Two services feeding each other forever make run_until_idle raise."""
    saga = Saga("Loop", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    ping, pong = Service("ping", sagas=[saga]), Service("pong", sagas=[saga])
    ping.starts(saga)

    @ping.step(on=[OrderPlaced, StockReleased], emits=StockReserved)
    def hit(event: OrderPlaced | StockReleased) -> StockReserved:
        return StockReserved(event.order_id, "ball", 1)

    @pong.step(on=StockReserved, emits=StockReleased)
    def back(event: StockReserved) -> StockReleased:
        return StockReleased(event.order_id)

    transport = MemoryTransport(MemoryBus(default_partitions=2))
    kit = SagaTestKit([ping, pong], serde=JsonSerde(ALL_EVENTS), transport=transport)
    kit.start(saga, OrderPlaced("o", "ball", 1, 1))
    with pytest.raises(AssertionError, match="still busy after 20 rounds"):
        kit.run_until_idle(max_rounds=20)
    assert len(kit.published) > 20


def test_the_kit_needs_a_schema_source_and_a_starter() -> None:
    """Without schemas (or serde) or without a service that starts the saga, the kit refuses."""
    shop = build_shop()
    with pytest.raises(ConfigurationError, match="exactly one"):
        SagaTestKit(shop.services)
    kit = SagaTestKit([shop.inventory], serde=JsonSerde(ALL_EVENTS))
    with pytest.raises(ConfigurationError, match="no service of the kit starts"):
        kit.start(shop.saga, OrderPlaced("o", "b", 1, 1))
