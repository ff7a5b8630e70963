"""``async def`` handlers are awaited by the worker, in order, on every transport.

The same saga of async handlers runs on the in-memory bus and on a real broker through
confluent-kafka and kafka-python: a step that awaits, writes ``ctx.db`` and emits through
``ctx``; a business failure raised from a coroutine with its compensation; a transient
error retried; and a client bound to the handler's event loop that stays usable from one
event to the next (one loop per worker thread, closed with the worker).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from choreo import BusinessFailure, Context, Retry, Saga, Service, TransientError
from choreo.errors import ConfigurationError
from choreo.runtime import WorkerConfig, deadletter_topic
from choreo.store import Migration
from choreo.testing import SagaTestKit
from choreo.transports.base import Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

from .fixtures.events import (
    OrderCompleted,
    OrderFailed,
    OrderPlaced,
    PaymentAuthorized,
    PaymentDeclined,
    StockReleased,
    StockReserved,
    StockUnavailable,
)

NO_WAIT = Retry(max_attempts=3, backoff=0.0, jitter=False)
HOLDS = Migration(1, "held stock", ["CREATE TABLE holds (order_id TEXT PRIMARY KEY, qty INT)"])


@dataclass
class Seen:
    """What the handlers saw: their event loops, attempts, and a loop-bound client's uses."""

    loops: dict[str, set[int]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    client: asyncio.Queue[str] | None = None
    client_loop: asyncio.AbstractEventLoop | None = None

    def enter(self, step: str, order_id: str) -> None:
        self.loops.setdefault(step, set()).add(id(asyncio.get_running_loop()))
        key = f"{step}/{order_id}"
        self.attempts[key] = self.attempts.get(key, 0) + 1


@dataclass
class AsyncShop:
    """Three services whose handlers are all coroutines."""

    saga: Saga
    orders: Service
    inventory: Service
    payment: Service
    seen: Seen

    @property
    def services(self) -> list[Service]:
        return [self.orders, self.inventory, self.payment]


def build_async_shop() -> AsyncShop:
    """Return the saga: reserve (ctx.db) -> authorize (pivot, may decline) -> complete."""
    saga = Saga("AsyncFulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    orders = Service("orders", sagas=[saga])
    inventory = Service("inventory", sagas=[saga], migrations=[HOLDS])
    payment = Service("payment", sagas=[saga])
    orders.starts(saga)
    seen = Seen()

    @inventory.step(on=OrderPlaced, emits=StockReserved, fails_with=StockUnavailable)
    async def reserve(event: OrderPlaced, ctx: Context) -> StockReserved:
        seen.enter("reserve", event.order_id)
        await asyncio.sleep(0.001)
        if event.quantity > 5:
            raise BusinessFailure(StockUnavailable(event.order_id, "not that many"))
        ctx.db.execute("INSERT INTO holds VALUES (?, ?)", (event.order_id, event.quantity))
        return StockReserved(event.order_id, event.sku, event.quantity)

    @inventory.compensation(undoes=reserve, on=PaymentDeclined, emits=StockReleased)
    async def release(event: PaymentDeclined, ctx: Context) -> None:
        seen.enter("release", event.order_id)
        await asyncio.sleep(0)
        ctx.db.execute("DELETE FROM holds WHERE order_id = ?", (event.order_id,))
        ctx.emit(StockReleased(event.order_id))

    @payment.pivot(
        on=StockReserved, emits=PaymentAuthorized, fails_with=PaymentDeclined, retry=NO_WAIT
    )
    async def authorize(event: StockReserved) -> PaymentAuthorized | PaymentDeclined:
        seen.enter("authorize", event.order_id)
        if seen.client is None:  # a client bound to this loop, made once, used on every event
            seen.client, seen.client_loop = asyncio.Queue(), asyncio.get_running_loop()
        await seen.client.put(event.order_id)
        assert await seen.client.get() == event.order_id
        if event.order_id.startswith("retry") and seen.attempts[f"authorize/{event.order_id}"] == 1:
            raise TransientError("the card network timed out")
        if event.quantity > 3:
            return PaymentDeclined(event.order_id, "over the limit")
        return PaymentAuthorized(event.order_id, 100 * event.quantity)

    @orders.step(on=PaymentAuthorized, emits=OrderCompleted)
    async def complete(event: PaymentAuthorized) -> OrderCompleted:
        await asyncio.sleep(0)
        return OrderCompleted(event.order_id)

    @orders.compensation(undoes=saga, on=[StockUnavailable, StockReleased], emits=OrderFailed)
    async def reject(event: StockUnavailable | StockReleased) -> OrderFailed:
        return OrderFailed(event.order_id, type(event).__name__)

    return AsyncShop(saga, orders, inventory, payment, seen)


def _terminal(kit: SagaTestKit, *cids: str) -> bool:
    ends = {"test.runtime.OrderCompleted", "test.runtime.OrderFailed"}
    return all(ends & set(kit.event_types(cid)) for cid in cids)


def _exercise(kit: SagaTestKit, shop: AsyncShop, suffix: str, *, on_broker: bool) -> None:
    """Run four sagas (paid, declined, out of stock, retried) and check every outcome."""
    ok, declined, unavailable, retried = (
        f"{name}-{suffix}" for name in ("ok", "no", "out", "retry")
    )
    for cid, quantity in ((ok, 1), (declined, 4), (unavailable, 9), (retried, 2)):
        kit.start(shop.saga, OrderPlaced(cid, "book", quantity, 0), correlation_id=cid)
    if on_broker:
        kit.run_until(lambda: _terminal(kit, ok, declined, unavailable, retried), timeout=90)
    else:
        kit.run_until_idle()
    kit.expect(
        ok, [OrderPlaced, StockReserved, PaymentAuthorized, OrderCompleted], status="Completed"
    )
    kit.expect(
        declined,
        [OrderPlaced, StockReserved, PaymentDeclined, StockReleased, OrderFailed],
        status="Failed",
    )
    kit.expect(unavailable, [OrderPlaced, StockUnavailable, OrderFailed], status="Failed")
    kit.expect(retried, status="Completed")
    assert shop.seen.attempts[f"authorize/{retried}"] == 2
    assert kit.query(shop.inventory, "SELECT order_id, qty FROM holds ORDER BY order_id") == sorted(
        [(ok, 1), (retried, 2)]
    )
    # each worker awaits on one loop for its lifetime
    assert {step: len(ids) for step, ids in shop.seen.loops.items()} == {
        "reserve": 1,
        "release": 1,
        "authorize": 1,
    }
    assert kit.dead_letters() == []


def test_async_handlers_on_the_memory_bus() -> None:
    """The worker awaits each coroutine in turn; the loop is closed with the worker."""
    shop = build_async_shop()
    with SagaTestKit(shop.services, serde=_serde(), config=WorkerConfig(retry=NO_WAIT)) as kit:
        _exercise(kit, shop, "m", on_broker=False)
        loop = shop.seen.client_loop
        assert loop is not None and not loop.is_closed()
    assert loop.is_closed()


KINDS = ["confluent", "kafka-python"]


@pytest.fixture(params=KINDS)
def kafka(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Iterator[Transport]:
    """Yield a transport of each Kafka kind on the session's broker."""
    config = KafkaConfig(
        bootstrap_servers=kafka_bootstrap,
        client_id="choreo-async-tests",
        consumer={"session.timeout.ms": 6000, "heartbeat.interval.ms": 300},
    )
    yield open_transport(request.param, config=config)


@pytest.mark.kafka
def test_async_handlers_on_a_real_broker(kafka: Transport) -> None:
    """The same async saga through confluent-kafka and kafka-python on the real broker."""
    prefix = f"as{uuid.uuid4().hex[:10]}."
    config = WorkerConfig(
        poll_timeout=0.1,
        retry=NO_WAIT,
        compensation_retry=NO_WAIT,
        topic_naming=lambda event_type: prefix + event_type,
        deadletter_naming=lambda service: prefix + deadletter_topic(service),
    )
    shop = build_async_shop()
    with SagaTestKit(
        shop.services, serde=_serde(), transport=kafka, config=config, group_prefix=prefix
    ) as kit:
        _exercise(kit, shop, prefix.rstrip("."), on_broker=True)


def test_a_worker_inside_a_running_event_loop_is_refused_not_dead_lettered() -> None:
    """Driving async handlers from a coroutine would nest loops: refused, saying what to do."""
    shop = build_async_shop()

    async def drive(kit: SagaTestKit) -> None:
        with pytest.raises(ConfigurationError, match=r"asyncio\.to_thread"):
            kit.run_until_idle()
        await asyncio.to_thread(kit.run_until_idle)  # what the message says works

    with SagaTestKit(shop.services, serde=_serde()) as kit:
        cid = kit.start(shop.saga, OrderPlaced("o-1", "book", 1, 0), correlation_id="o-1")
        asyncio.run(drive(kit))
        kit.expect(cid, status="Completed")
        assert kit.dead_letters() == []


def _serde() -> Any:
    from .fixtures.serdes import avro_serde

    return avro_serde()


def test_a_plain_handler_returning_a_coroutine_says_to_declare_it_async() -> None:
    """A wrapper hiding an async handler is not awaited: its dead letter says what to do."""
    shop = build_async_shop()
    audit = Service("audit", sagas=[shop.saga])

    async def really(event: OrderCompleted) -> None:
        return None

    @audit.listener(on=OrderCompleted)
    def hidden(event: OrderCompleted) -> Any:
        return really(event)

    with SagaTestKit([*shop.services, audit], serde=_serde()) as kit:
        cid = kit.when(shop.saga, OrderPlaced("o-1", "book", 1, 0), correlation_id="o-1")
        (letter,) = kit.dead_letters(cid)
        assert "returned an awaitable without being declared async" in letter.message
        assert "async def" in letter.message
