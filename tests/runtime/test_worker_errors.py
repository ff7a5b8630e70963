"""Retries, backoff, business failures and dead letters on the memory transport."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from choreo.choreography.service import Retry, Saga, Service
from choreo.errors import BusinessFailure, HandlerError, TransientError
from choreo.model.envelope import Envelope, Header, Role, headers_to_dict
from choreo.model.events import Event
from choreo.runtime import (
    COMPENSATION_RETRY,
    DEFAULT_RETRY,
    DeadLetter,
    DeadLetterReason,
    Publisher,
    Worker,
    WorkerConfig,
)
from choreo.runtime.retry import backoff_delay, retry_for
from choreo.transports.base import TopicPartition
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderCompleted, OrderFailed, OrderPlaced, StockReserved
from .fixtures.serdes import JsonSerde
from .fixtures.shop import ALL_EVENTS, Shop, build_shop
from .helpers import envelopes, run_until_idle, saga_records

FAST = WorkerConfig(poll_timeout=0.0)
ORDER_TOPIC = "test.runtime.OrderPlaced"


class _RecordingStop(threading.Event):
    """A stop event that never waits: it records the backoff delays asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.delays.append(timeout or 0.0)
        return self.is_set()


def _workers(shop: Shop, transport: MemoryTransport, serde: Any, **config: Any) -> list[Worker]:
    cfg = WorkerConfig(poll_timeout=0.0, **config)
    return [Worker(s, transport, serde, config=cfg) for s in shop.services]


def _dead_letters(bus: MemoryBus, service: str) -> list[DeadLetter]:
    return [DeadLetter.from_record(r) for r in bus.records(f"choreo.deadletter.{service}")]


def _start_headers(event_type: str = ORDER_TOPIC) -> list[tuple[str, bytes]]:
    return Envelope.start(event_type, saga="Fulfilment", service="test").to_headers()


def test_poison_records_are_dead_lettered_once_and_the_worker_moves_on(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Garbage bytes, missing headers and an unknown type each land in the DLQ once."""
    inventory = Worker(shop.inventory, transport, serde, config=FAST)
    inventory.start()
    producer = transport.producer()
    garbage_headers = _start_headers()
    producer.publish(ORDER_TOPIC, b"\x00garbage\xff", key=b"k1", headers=garbage_headers)
    producer.publish(ORDER_TOPIC, b"no headers at all", key=b"k2")
    unknown_headers = _start_headers("test.runtime.NoSuchEvent")
    producer.publish(ORDER_TOPIC, b"{}", key=b"k3", headers=unknown_headers)
    publisher = Publisher(shop.orders, transport, serde)
    cid = publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 100))

    assert run_until_idle([inventory]) == 4
    letters = _dead_letters(bus, "inventory")
    assert [d.reason for d in letters] == [
        DeadLetterReason.UNDECODABLE,
        DeadLetterReason.BAD_ENVELOPE,
        DeadLetterReason.UNKNOWN_EVENT_TYPE,
    ]
    assert [d.record.key for d in letters] == [b"k1", b"k2", b"k3"]
    assert letters[0].record.value == b"\x00garbage\xff"
    assert letters[0].original_headers == garbage_headers
    assert letters[1].original_headers == []
    assert letters[1].message.startswith("bad-envelope: missing header")
    assert [d.source_offset for d in letters] == [0, 1, 2]
    assert {(d.source_topic, d.source_partition, d.service) for d in letters} == {
        (ORDER_TOPIC, 0, "inventory")
    }
    assert [d.attempts for d in letters] == [0, 0, 0]
    assert all(d.failed_at_ms > 0 and not d.needs_human for d in letters)
    assert all(d.error_class.startswith("choreo.errors.") for d in letters)
    assert shop.state.count("inventory.reserve") == 1
    assert envelopes(bus.records("test.runtime.StockReserved"))[0].correlation_id == cid
    assert bus.committed("inventory")[TopicPartition(ORDER_TOPIC, 0)] == 4

    # Redelivery of the whole topic dead-letters nothing twice and reserves nothing twice.
    inventory.close()
    transport.consumer("inventory").commit({TopicPartition(ORDER_TOPIC, 0): 0})
    again = Worker(shop.inventory, transport, serde, config=FAST, inbox=inventory.inbox)
    assert run_until_idle([again]) == 4
    assert len(_dead_letters(bus, "inventory")) == 3
    assert shop.state.count("inventory.reserve") == 1


def test_transient_errors_are_retried_with_backoff_until_success(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """Two transient failures then success: three attempts, waits of 1 ms then 2 ms."""
    shop.state.flaky["payment.authorize"] = 2
    workers = _workers(shop, transport, serde)
    stop = _RecordingStop()
    for worker in workers:
        worker._stop = stop
    cid = Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    run_until_idle(workers)
    assert shop.state.count("payment.authorize") == 3
    assert stop.delays == [0.001, 0.002]
    assert envelopes(saga_records(bus, cid))[-2].role is Role.COMPLETED
    assert _dead_letters(bus, "payment") == []


def test_exhausted_retries_dead_letter_the_record_and_the_worker_continues(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A step failing on every attempt is dead-lettered with its attempts; later sagas go on."""
    shop.state.broken.add("payment.authorize")
    workers = _workers(shop, transport, serde)
    publisher = Publisher(shop.orders, transport, serde)
    stuck = publisher.start(shop.saga, OrderPlaced("o1", "book", 1, 100))
    run_until_idle(workers)
    assert shop.state.count("payment.authorize", "o1") == 3
    (letter,) = _dead_letters(bus, "payment")
    assert letter.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert letter.attempts == 3
    assert letter.error_class == "builtins.RuntimeError"
    assert "payment.authorize is broken" in letter.message
    assert letter.source_topic == "test.runtime.StockReserved"
    assert not letter.needs_human
    assert headers_to_dict(letter.record.headers)[Header.CORRELATION_ID] == stuck.encode()

    shop.state.broken.clear()
    done = publisher.start(shop.saga, OrderPlaced("o2", "book", 1, 100))
    run_until_idle(workers)
    assert envelopes(saga_records(bus, done))[-2].role is Role.COMPLETED
    assert envelopes(saga_records(bus, stuck))[-1].role is Role.STEP


def test_an_exhausted_compensation_needs_a_human(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any
) -> None:
    """A compensation that never succeeds is dead-lettered with choreo-needs-human: true."""
    shop.state.payment_limit = 1
    shop.state.broken.add("inventory.release")
    workers = _workers(shop, transport, serde)
    cid = Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    run_until_idle(workers)
    (letter,) = _dead_letters(bus, "inventory")
    assert letter.reason is DeadLetterReason.COMPENSATION_EXHAUSTED
    assert letter.needs_human
    assert headers_to_dict(letter.record.headers)[Header.NEEDS_HUMAN] == b"true"
    assert letter.attempts == 3
    assert [e.role for e in envelopes(saga_records(bus, cid))][-1] is Role.FAILURE


def test_compensations_get_a_larger_default_budget() -> None:
    """Without their own retry, compensations get 20 attempts and steps the default 5."""
    shop = build_shop(retry=None)
    release = shop.inventory.handler_for("test.runtime.PaymentDeclined")
    reserve = shop.inventory.handler_for(ORDER_TOPIC)
    assert release is not None and reserve is not None
    assert retry_for(release, DEFAULT_RETRY, COMPENSATION_RETRY).max_attempts == 20
    assert retry_for(reserve, DEFAULT_RETRY, COMPENSATION_RETRY).max_attempts == 5
    delays = [COMPENSATION_RETRY.delay(n) for n in range(1, 20)]
    assert max(delays) == COMPENSATION_RETRY.max_backoff


def test_backoff_grows_exponentially_and_jitter_stays_in_range() -> None:
    """Delays double up to the cap; jitter scales them into [0.5, 1.0] of that."""
    retry = Retry(max_attempts=6, backoff=0.1, multiplier=2.0, max_backoff=0.5, jitter=False)
    assert [backoff_delay(retry, n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    jittered = Retry(max_attempts=6, backoff=0.1, multiplier=2.0, max_backoff=0.5)
    for n in range(1, 6):
        assert 0.5 * retry.delay(n) <= backoff_delay(jittered, n) <= retry.delay(n)


@dataclass(frozen=True, slots=True)
class _Stray(Event):
    __avro_name__: ClassVar[str] = "test.runtime.Stray"
    order_id: str


def _one_step_service(handler: Any, **decl: Any) -> tuple[Service, Saga]:
    saga = Saga("Fulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    service = Service("odd", sagas=[saga])
    service.step(on=OrderPlaced, retry=Retry(max_attempts=2, backoff=0.0), **decl)(handler)
    return service, saga


def test_an_undeclared_emitted_type_is_a_failing_handler(
    bus: MemoryBus, transport: MemoryTransport
) -> None:
    """Emitting a type the handler did not declare is retried, then dead-lettered."""
    calls: list[str] = []

    def stray(event: OrderPlaced) -> Event:
        calls.append(event.order_id)
        return _Stray(event.order_id)

    service, _saga = _one_step_service(stray, emits=StockReserved)
    serde = JsonSerde([*ALL_EVENTS, _Stray])
    worker = Worker(service, transport, serde, config=FAST)
    shop = build_shop()
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    run_until_idle([worker])
    assert calls == ["o", "o"]
    (letter,) = _dead_letters(bus, "odd")
    assert letter.error_class == f"{HandlerError.__module__}.{HandlerError.__qualname__}"
    assert "does not declare" in letter.message
    assert bus.records("test.runtime.Stray") == []


def test_a_business_failure_outside_fails_with_is_a_failing_handler(
    bus: MemoryBus, transport: MemoryTransport
) -> None:
    """BusinessFailure with an event the step does not declare goes to the dead letters."""

    def refuse(event: OrderPlaced) -> None:
        raise BusinessFailure(OrderCompleted(event.order_id))

    service, _ = _one_step_service(refuse, emits=StockReserved, fails_with=OrderFailed)
    serde = JsonSerde(ALL_EVENTS)
    worker = Worker(service, transport, serde, config=FAST)
    shop = build_shop()
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    run_until_idle([worker])
    (letter,) = _dead_letters(bus, "odd")
    assert "not one of its declared fails_with" in letter.message
    assert bus.records("test.runtime.OrderFailed") == []


def test_retry_log_lines_name_the_event_and_skip_tracebacks_of_transient_errors(
    bus: MemoryBus, transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry log lines name service, event type and correlation id; no transient traceback."""

    def flaky(event: OrderPlaced) -> None:
        raise TransientError("database timeout")

    service, _ = _one_step_service(flaky, emits=StockReserved)
    serde = JsonSerde(ALL_EVENTS)
    worker = Worker(service, transport, serde, config=FAST)
    shop = build_shop()
    cid = Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    with caplog.at_level("WARNING", logger="choreo.runtime.worker"):
        run_until_idle([worker])
    lines = [r.getMessage() for r in caplog.records]
    assert any("attempt 1/2 failed" in line and f"cid={cid}" in line for line in lines)
    assert all(f"[odd {ORDER_TOPIC} cid={cid}]" in line for line in lines if "attempt" in line)
    (final,) = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert not final.exc_info


class _DeadlockError(Exception):
    """An error shaped like psycopg's DeadlockDetected: SQLSTATE 40P01."""

    sqlstate = "40P01"


def test_a_deadlocked_handler_rolls_back_its_batch_instead_of_retrying_in_place(
    bus: MemoryBus, transport: MemoryTransport
) -> None:
    """SQLSTATE class 40 ends the batch (rolled back, polled again), never a dead letter."""
    calls: list[int] = []

    def reserve(event: OrderPlaced, ctx: Any) -> StockReserved:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise _DeadlockError("deadlock detected")
        return StockReserved(event.order_id, "book", 1)

    service, _ = _one_step_service(reserve, emits=StockReserved)
    serde = JsonSerde(ALL_EVENTS)
    worker = Worker(service, transport, serde, config=FAST)
    shop = build_shop()
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o", "book", 1, 1))
    with pytest.raises(_DeadlockError):
        worker.run_once()
    assert calls == [1]  # no retry inside the doomed transaction
    run_until_idle([worker])
    assert calls == [1, 1]  # the whole batch came again, as a first attempt
    assert _dead_letters(bus, "odd") == []
    assert len(bus.records("test.runtime.StockReserved")) == 1
