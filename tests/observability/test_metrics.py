"""Worker metrics from the WorkerMetrics middleware on the memory bus, read from an exposition."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import pytest
from runtime.fixtures.events import OrderPlaced
from runtime.fixtures.serdes import avro_serde
from runtime.fixtures.shop import Shop, ShopState, build_shop

from choreo.choreography.service import Retry
from choreo.observability.health import Health
from choreo.observability.metrics import WORKER_METRICS, WorkerMetrics
from choreo.observability.middleware import HealthMiddleware
from choreo.runtime import Publisher, WorkerConfig

from .shop import Samples, Workers, samples, value

NO_WAIT = Retry(max_attempts=3, backoff=0.0, jitter=False)
T = "test.runtime."


class Run:
    """The runtime tests' Fulfilment shop with metrics, on a memory bus."""

    def __init__(self, state: ShopState) -> None:
        self.shop: Shop = build_shop(state, retry=NO_WAIT)
        self.registry = prometheus_client.CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, lag_interval=0.0)
        self.health = Health()
        self.workers = Workers(
            self.shop.services,
            avro_serde(),
            [self.metrics, HealthMiddleware(self.health)],
            config=WorkerConfig(poll_timeout=0.0, retry=NO_WAIT, compensation_retry=NO_WAIT),
        )
        self.publisher = Publisher(self.shop.orders, self.workers.transport, avro_serde())

    def order(self, order_id: str, quantity: int = 1, sku: str = "book") -> None:
        """Open a saga for one order."""
        self.publisher.start(self.shop.saga, OrderPlaced(order_id, sku, quantity, 100 * quantity))

    def scrape(self) -> Samples:
        """Return the registry's exposition, parsed."""
        return samples(prometheus_client.generate_latest(self.registry).decode())

    def close(self) -> None:
        self.publisher.close()
        self.workers.close()


@pytest.fixture
def run() -> Iterator[Run]:
    """Yield a shop whose payment fails twice (transiently) and whose notifier is broken."""
    state = ShopState()
    state.flaky["payment.authorize"] = 2
    state.broken.add("notifier.tell")
    current = Run(state)
    yield current
    current.close()


def test_counts_follow_what_the_handlers_did(run: Run) -> None:
    """Handled, failed, retried and dead-lettered counts match the scenario, per event type."""
    for number in range(3):
        run.order(f"o-{number}")
    run.order("o-big", quantity=500)  # more than in stock: BusinessFailure
    run.workers.run_until_idle()
    found = run.scrape()

    def count(name: str, service: str, event_type: str, **labels: str) -> float:
        return value(found, name, service=service, event_type=T + event_type, **labels)

    assert count("choreo_events_handled_total", "inventory", "OrderPlaced") == 3
    assert count("choreo_events_failed_total", "inventory", "OrderPlaced") == 1
    assert count("choreo_events_handled_total", "payment", "StockReserved") == 3
    assert count("choreo_events_retried_total", "payment", "StockReserved") == 2
    assert count("choreo_events_handled_total", "orders", "ShipmentScheduled") == 3
    assert count("choreo_events_handled_total", "orders", "StockUnavailable") == 1
    assert count("choreo_events_handled_total", "notifier", "OrderCompleted") == 0
    reason = {"reason": "retries-exhausted"}
    assert count("choreo_events_dead_lettered_total", "notifier", "OrderCompleted", **reason) == 3
    assert count("choreo_events_dead_lettered_total", "notifier", "OrderFailed", **reason) == 1
    assert count("choreo_events_retried_total", "notifier", "OrderCompleted") == 3 * 2
    assert run.shop.state.count("notifier.tell") == 4 * 3  # three attempts each
    # one duration per dispatched event, whatever its outcome
    assert count("choreo_handler_duration_seconds_count", "inventory", "OrderPlaced") == 4
    assert count("choreo_handler_duration_seconds_count", "notifier", "OrderCompleted") == 3
    inf = count("choreo_handler_duration_seconds_bucket", "payment", "StockReserved", le="+Inf")
    assert inf == 3
    assert count("choreo_handler_duration_seconds_sum", "payment", "StockReserved") > 0


def test_lag_backlog_and_rebalances(run: Run) -> None:
    """Lag is what is left to read, then zero; each worker was assigned once; nothing pending."""
    for worker in run.workers.workers:
        worker.run_once(0.0)  # join the group, nothing to read yet
    for number in range(5):
        run.order(f"o-{number}")
    inventory = next(w for w in run.workers.workers if w.service.name == "inventory")
    inventory.run_once(0.0)  # handles the 5 orders; the lag was read before it handled them
    found = run.scrape()
    labels = {"service": "inventory", "topic": T + "OrderPlaced", "partition": "0"}
    assert value(found, "choreo_consumer_lag", **labels) == 5
    run.workers.run_until_idle()
    for worker in run.workers.workers:  # one more poll refreshes lag and backlog
        worker.run_once(0.0)
    found = run.scrape()
    assert value(found, "choreo_consumer_lag", **labels) == 0
    for worker in run.workers.workers:
        name = worker.service.name
        assert value(found, "choreo_rebalances_total", service=name, kind="assigned") == 1
        assert value(found, "choreo_assigned_partitions", service=name) == len(worker.topics)
        assert value(found, "choreo_outbox_backlog", service=name) == 0
    assert run.health.readiness().ok


def test_every_family_is_exported_and_named_choreo(run: Run) -> None:
    """Every documented family appears in the exposition, and every name starts with choreo_."""
    run.order("o-1")
    run.workers.run_until_idle()
    text = prometheus_client.generate_latest(run.registry).decode()
    for name in WORKER_METRICS:
        assert f"# TYPE {name} " in text, name
    assert {name for name, _ in samples(text)} and all(
        name.startswith("choreo_") for name, _ in samples(text)
    )


def test_dead_letters_of_foreign_event_types_share_one_label(run: Run) -> None:
    """An undecodable record of a type the service never declared is counted as "other"."""
    inventory = next(w for w in run.workers.workers if w.service.name == "inventory")
    inventory.run_once(0.0)
    run.order("o-1")
    [record] = run.workers.bus.records(T + "OrderPlaced")
    producer = run.workers.transport.producer()
    for index in range(20):
        headers = tuple(
            (name, f"evil.Type{index}".encode() if name == "choreo-type" else data)
            if name != "choreo-id"
            else (name, f"00000000-0000-5000-8000-{index:012d}".encode())
            for name, data in record.headers
        )
        producer.publish(T + "OrderPlaced", b"\x00garbage", key=record.key, headers=headers)
    producer.flush()
    run.workers.run_until_idle()
    found = run.scrape()
    dead = {
        dict(labels)["event_type"]
        for (name, labels), count in found.items()
        if name == "choreo_events_dead_lettered_total" and dict(labels)["service"] == "inventory"
    }
    assert dead == {"other"}
    assert (
        sum(
            count
            for (name, labels), count in found.items()
            if name == "choreo_events_dead_lettered_total"
            and dict(labels)["service"] == "inventory"
        )
        == 20
    )


def test_a_pool_of_handler_threads_loses_no_count() -> None:
    """With concurrency > 1 the per-thread tables add up to every event."""
    shop = build_shop(ShopState(stock={"book": 10_000}), retry=NO_WAIT)
    registry = prometheus_client.CollectorRegistry()
    config = WorkerConfig(
        poll_timeout=0.0,
        concurrency=4,
        topic_partitions=4,
        retry=NO_WAIT,
        compensation_retry=NO_WAIT,
    )
    workers = Workers([shop.inventory], avro_serde(), [WorkerMetrics(registry)], config=config)
    publisher = Publisher(shop.orders, workers.transport, avro_serde(), config=config)
    try:
        workers.workers[0].start()  # creates the topics with four partitions
        for number in range(400):
            publisher.start(shop.saga, OrderPlaced(f"o-{number}", "book", 1, 100))
        workers.run_until_idle()
        consumer = workers.workers[0].delivery.link.consumer  # type: ignore[attr-defined]
        assert sum(tp.topic == T + "OrderPlaced" for tp in consumer.assignment()) == 4
    finally:
        publisher.close()
        workers.close()
    found = samples(prometheus_client.generate_latest(registry).decode())
    labels = {"service": "inventory", "event_type": T + "OrderPlaced"}
    assert value(found, "choreo_events_handled_total", **labels) == 400
    assert value(found, "choreo_handler_duration_seconds_count", **labels) == 400


def test_the_backlog_counts_the_store_s_unsent_rows(run: Run) -> None:
    """Rows left in the outbox (a replica died before publishing them) show as backlog."""
    from choreo.store.outbox import OutboxRecord

    payment = next(w for w in run.workers.workers if w.service.name == "payment")
    payment.run_once(0.0)
    left = [OutboxRecord(f"id-{n}", "somewhere", b"k", b"v", ()) for n in range(7)]
    payment.inbox.begin()
    payment.inbox.enqueue(payment.origin, left)
    payment.inbox.commit()
    payment.run_once(0.0)
    assert value(run.scrape(), "choreo_outbox_backlog", service="payment") == 7
