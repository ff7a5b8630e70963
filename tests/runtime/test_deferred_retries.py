"""Backoffs that keep polling: deferred retries, infrastructure errors; fatal errors stop run()."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from choreo.choreography.service import Retry, Saga, Service
from choreo.errors import ConfigurationError, TransientError
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import EventInfo, Middleware, Outcome, Publisher, Worker, WorkerConfig
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record, TopicPartition
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderCompleted, OrderFailed, OrderPlaced, StockReserved
from .fixtures.serdes import JsonSerde
from .fixtures.shop import ALL_EVENTS, build_shop

ORDERS = "test.runtime.OrderPlaced"
BACKOFF = 0.3


class _Outcomes(Middleware):
    """Records each dispatch's order id, attempt and outcome."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, Outcome]] = []

    def after_dispatch(
        self,
        worker: Worker,
        event: EventInfo,
        outcome: Outcome,
        emitted: Sequence[OutboxRecord],
        error: BaseException | None,
    ) -> None:
        order = event.envelope.correlation_id
        self.seen.append((order, event.attempt, outcome))


def _service(
    calls: Counter[str], slow: str, called_at: dict[str, list[float]] | None = None
) -> Service:
    saga = Saga("Fulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    service = Service("inventory", sagas=[saga])
    retry = Retry(
        max_attempts=3, backoff=BACKOFF, multiplier=1.0, max_backoff=BACKOFF, jitter=False
    )

    @service.step(on=OrderPlaced, emits=StockReserved, retry=retry)
    def reserve(event: OrderPlaced) -> StockReserved:
        calls[event.order_id] += 1
        if called_at is not None:
            called_at.setdefault(event.order_id, []).append(time.monotonic())
        if event.order_id == slow and calls[slow] == 1:
            raise TransientError("try later")
        return StockReserved(event.order_id, event.sku, event.quantity)

    return service


def _drain_until(worker: Worker, done: Callable[[], bool], seconds: float = 20.0) -> None:
    """Runs the worker until ``done()`` holds; the deadline only bounds a broken run."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        worker.run_once(0.01)


def test_a_long_backoff_pauses_one_partition_and_the_others_go_on() -> None:
    """The failing record's partition waits out its backoff; the other partition is handled."""
    bus = MemoryBus(default_partitions=2)
    transport = MemoryTransport(bus)
    serde = JsonSerde(ALL_EVENTS)
    shop = build_shop()
    publisher = Publisher(shop.orders, transport, serde, config=WorkerConfig(topic_partitions=2))
    cids = {
        f"o{n}": publisher.start(shop.saga, OrderPlaced(f"o{n}", "book", 1, 1)) for n in range(12)
    }
    partition_of = {
        headers_to_dict(r.headers)[Header.CORRELATION_ID].decode(): r.partition
        for r in bus.records(ORDERS)
    }
    slow = "o0"
    slow_partition = partition_of[cids[slow]]
    other = [o for o, cid in cids.items() if partition_of[cid] != slow_partition]
    assert other, "both partitions hold orders"
    calls: Counter[str] = Counter()
    outcomes = _Outcomes()
    config = WorkerConfig(poll_timeout=0.0, max_inline_backoff=0.05, topic_partitions=2)
    called_at: dict[str, list[float]] = {}
    worker = Worker(
        _service(calls, slow, called_at), transport, serde, config=config, middleware=[outcomes]
    )

    def others_handled() -> bool:
        return all(calls[o] == 1 for o in other)

    _drain_until(worker, lambda: others_handled() or calls[slow] > 1)
    assert (cids[slow], 1, Outcome.DEFERRED) in outcomes.seen
    if calls[slow] == 1:  # the usual case; a loaded machine may already be past the backoff
        assert worker._pauses.until.keys() == {TopicPartition(ORDERS, slow_partition)}

    _drain_until(worker, lambda: calls[slow] == 2 and others_handled())
    worker.close()
    assert calls[slow] == 2
    failed, retried = called_at[slow]
    # The other partition went on while the failing record waited out its backoff.
    assert max(called_at[o][0] for o in other) < retried
    assert retried - failed >= BACKOFF
    assert set(calls) == set(cids) and all(calls[o] == 1 for o in cids if o != slow)
    assert (cids[slow], 2, Outcome.HANDLED) in outcomes.seen
    assert len(bus.records("test.runtime.StockReserved")) == len(cids)
    assert sum(bus.committed("inventory").values()) == len(cids)
    assert worker._pauses.until == {}


def test_short_backoffs_still_wait_in_line() -> None:
    """A backoff within max_inline_backoff is slept on the spot: nothing is paused."""
    transport = MemoryTransport(MemoryBus())
    serde = JsonSerde(ALL_EVENTS)
    shop = build_shop()
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o0", "book", 1, 1))
    calls: Counter[str] = Counter()
    config = WorkerConfig(poll_timeout=0.0, max_inline_backoff=BACKOFF * 2)
    worker = Worker(_service(calls, "o0"), transport, serde, config=config)
    started = time.monotonic()
    assert worker.run_once(0.0) == 1
    assert time.monotonic() - started >= BACKOFF
    assert calls["o0"] == 2
    assert worker._pauses.until == {}
    worker.close()


class _FailingCommitOnce(Middleware):
    """Raises a retriable error before the first commit."""

    def __init__(self) -> None:
        self.failed_at: float | None = None

    def before_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
        if self.failed_at is None:
            self.failed_at = time.monotonic()
            raise ConnectionError("store unreachable")


def test_a_retriable_error_backs_off_polling_with_partitions_paused() -> None:
    """run() rewinds, keeps polling (getting nothing: paused) for error_backoff, then resumes."""
    transport = MemoryTransport(MemoryBus())
    serde = JsonSerde(ALL_EVENTS)
    shop = build_shop()
    Publisher(shop.orders, transport, serde).start(shop.saga, OrderPlaced("o0", "book", 1, 1))
    calls: Counter[str] = Counter()
    failing = _FailingCommitOnce()
    config = WorkerConfig(poll_timeout=0.01, error_backoff=1.0)
    worker = Worker(_service(calls, "none"), transport, serde, config=config, middleware=[failing])
    worker.start()
    consumer = worker._consumer
    assert consumer is not None
    polls: list[tuple[float, int]] = []
    real_poll = consumer.poll

    def counting_poll(max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        records = real_poll(max_records, timeout)
        polls.append((time.monotonic(), len(records)))
        return records

    consumer.poll = counting_poll  # type: ignore[method-assign]
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while not transport.bus.records("test.runtime.StockReserved") and time.monotonic() < deadline:
        time.sleep(0.01)
    handled_at = time.monotonic()
    worker.stop()
    runner.join(10)
    assert failing.failed_at is not None
    assert handled_at - failing.failed_at >= 0.3
    assert calls["o0"] == 2  # handled, rolled back by the failed commit, handled again
    after = [(at, n) for at, n in polls if at > failing.failed_at]
    first = next(i for i, (_, n) in enumerate(after) if n)  # the batch, polled again
    assert first >= 2  # it kept polling (and got nothing: paused) during the backoff
    assert after[first][0] - failing.failed_at >= 1.0
    assert len(transport.bus.records("test.runtime.StockReserved")) == 1


def test_a_configuration_error_ends_run_with_a_fatal_error() -> None:
    """An exactly-once worker on a transport without transactions stops and says why."""
    transport = MemoryTransport(MemoryBus())

    class _Plain(MemoryTransport):
        def producer(self, *, transactional_id: str | None = None) -> Any:
            return transport.producer()

    serde = JsonSerde(ALL_EVENTS)
    worker = Worker(
        _service(Counter(), "none"),
        _Plain(transport.bus),
        serde,
        config=WorkerConfig(poll_timeout=0.0, exactly_once=True),
    )
    with pytest.raises(ConfigurationError, match="has no transactions"):
        worker.run()
