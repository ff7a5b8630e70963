"""The tracker's metrics: sagas per status, stuck sagas and durations, scraped as text."""

from __future__ import annotations

import prometheus_client
import pytest

from choreo.model.envelope import Header, now_ms
from choreo.observability.tracker_metrics import OTHER, TrackerMetrics
from choreo.tracker import SagaStatus
from choreo.transports.base import Record

from .shop import ShopRun, samples, value


def scrape(metrics: TrackerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Register ``metrics`` in a fresh registry and return its exposition's samples."""
    registry = prometheus_client.CollectorRegistry()
    registry.register(metrics)
    return samples(prometheus_client.generate_latest(registry).decode())


def test_counts_match_the_tracker_and_durations_cover_every_ended_saga(
    shop_run: ShopRun,
) -> None:
    """After 80 orders: per-status gauges equal the tracker's counts; one duration per end."""
    shop_run.place(80, seed=3)
    shop_run.kit.run_until_idle()
    tracker = shop_run.new_tracker()
    metrics = TrackerMetrics(tracker)
    tracker.feed_many(shop_run.records())
    found = scrape(metrics)
    counts = tracker.counts()
    assert counts[SagaStatus.COMPLETED] > 0 and counts[SagaStatus.FAILED] > 0
    for status in SagaStatus:
        assert (
            value(found, "choreo_sagas", saga="OrderFulfillment", status=status.value)
            == (counts[status])
        )
    for outcome in (SagaStatus.COMPLETED, SagaStatus.FAILED):
        labels = {"saga": "OrderFulfillment", "outcome": outcome.value}
        ended = tracker.sagas(status=outcome, limit=1_000)
        assert value(found, "choreo_saga_duration_seconds_count", **labels) == len(ended)
        total = sum((trace.duration_ms or 0) / 1000 for trace in ended)
        assert value(found, "choreo_saga_duration_seconds_sum", **labels) == pytest.approx(total)
        assert value(found, "choreo_saga_duration_seconds_bucket", le="+Inf", **labels) == len(
            ended
        )
    assert value(found, "choreo_sagas_stuck", saga="OrderFulfillment") == 0


def test_a_saga_that_stops_moving_is_counted_stuck(shop_run: ShopRun) -> None:
    """A started saga nobody handles becomes stuck once its deadline passed."""
    shop_run.place(1, seed=4)  # published, never handled
    tracker = shop_run.new_tracker()
    metrics = TrackerMetrics(tracker)
    tracker.feed_many(shop_run.records())
    before = scrape(metrics)
    assert value(before, "choreo_sagas_stuck", saga="OrderFulfillment") == 0
    assert value(before, "choreo_sagas", saga="OrderFulfillment", status="Started") == 1
    assert tracker.check_deadlines(now_ms() + 3_600_000)
    after = scrape(metrics)
    assert value(after, "choreo_sagas_stuck", saga="OrderFulfillment") == 1
    assert value(after, "choreo_sagas", saga="OrderFulfillment", status="Stuck") == 1
    assert value(after, "choreo_sagas", saga="OrderFulfillment", status="Started") == 0


def test_a_saga_is_timed_once_even_when_its_events_come_again(shop_run: ShopRun) -> None:
    """Feeding the same records twice observes each ended saga's duration once."""
    shop_run.place(10, seed=5)
    shop_run.kit.run_until_idle()
    tracker = shop_run.new_tracker()
    metrics = TrackerMetrics(tracker)
    records = shop_run.records()
    tracker.feed_many(records)
    tracker.feed_many(records)
    found = scrape(metrics)
    ended = sum(
        value(found, "choreo_saga_duration_seconds_count", saga="OrderFulfillment", outcome=o)
        for o in ("Completed", "Failed")
    )
    assert ended == 10


def test_saga_types_beyond_the_limit_are_counted_as_other(shop_run: ShopRun) -> None:
    """Saga names come from data: past ``max_saga_types`` they share the label "other"."""
    shop_run.place(6, seed=6)
    shop_run.kit.run_until_idle()
    records = shop_run.records()
    cids = sorted({dict(r.headers)[Header.CORRELATION_ID] for r in records})
    renamed: list[Record] = []
    for index, record in enumerate(records):
        number = cids.index(dict(record.headers)[Header.CORRELATION_ID])
        saga = f"Saga{number % 3}\x1b[31m" if number % 2 else "OrderFulfillment"
        headers = tuple(
            (name, saga.encode() if name == Header.SAGA else data) for name, data in record.headers
        )
        renamed.append(Record(record.topic, 0, index, record.key, record.value, headers))
    tracker = shop_run.new_tracker()
    metrics = TrackerMetrics(tracker, max_saga_types=1)
    tracker.feed_many(renamed)
    found = scrape(metrics)
    labels = {dict(labels).get("saga") for (name, labels) in found if name == "choreo_sagas"}
    assert len(labels) == 2 and OTHER in labels
    assert not any("\x1b" in str(label) for label in labels)
    for status, count in tracker.counts().items():
        assert (
            sum(
                value(found, "choreo_sagas", saga=label, status=status.value)
                for label in labels
                if label is not None
            )
            == count
        )
