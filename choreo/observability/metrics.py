"""Prometheus metrics of workers, as a :class:`~choreo.runtime.middleware.Middleware`.

``WorkerMetrics(registry)`` counts what the workers it is installed in do and exports it
to a :class:`prometheus_client.CollectorRegistry` (the ``choreo[metrics]`` extra). Every
name starts with ``choreo_``; every series has a ``service`` label:

=========================================  ==================================================
``choreo_events_handled_total``            events whose handler succeeded, per ``event_type``
``choreo_events_failed_total``             events whose handler raised a BusinessFailure (the
                                           step's failure event was emitted), per
                                           ``event_type``
``choreo_events_retried_total``            handler attempts that raised and were retried,
                                           per ``event_type``
``choreo_events_dead_lettered_total``      records sent to the dead-letter topic, per
                                           ``event_type`` and ``reason``
``choreo_handler_duration_seconds``        histogram of the time to dispatch one event
                                           (decode, every attempt and backoff, encoding its
                                           output), per ``event_type``
``choreo_consumer_lag``                    records between a partition's end and the
                                           worker's committed offset, per ``topic`` and
                                           ``partition`` (refreshed every ``lag_interval``)
``choreo_outbox_backlog``                  rows in the store's outbox (every replica's):
                                           not yet acknowledged by the broker, or
                                           acknowledged and deleted with the next batch
                                           (refreshed every ``lag_interval``)
``choreo_rebalances_total``                partition assignments and revocations, per
                                           ``kind`` (``assigned``, ``revoked``)
``choreo_assigned_partitions``             partitions the worker owns now
=========================================  ==================================================

Cost: the per-event hooks add two clock reads, a few dictionary updates and a bisection
to each event; counts are kept in plain per-thread tables (no lock on the event path) and
turned into metric families only when Prometheus scrapes. Event types outside the
service's declared ones (a dead letter of an unknown type comes from outside) are
labelled ``"other"``, so label cardinality stays bounded.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from choreo.model.envelope import Header
from choreo.runtime.deadletter import DeadLetterReason
from choreo.runtime.middleware import EventInfo, Middleware, Outcome
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record, TopicPartition

perf_counter = time.perf_counter

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from choreo.runtime.worker import Worker

__all__ = ["HANDLER_DURATION_BUCKETS", "WORKER_METRICS", "WorkerMetrics"]

HANDLER_DURATION_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the handler duration histogram's buckets (+Inf is added)."""

WORKER_METRICS: Final = (
    "choreo_events_handled_total",
    "choreo_events_failed_total",
    "choreo_events_retried_total",
    "choreo_events_dead_lettered_total",
    "choreo_handler_duration_seconds",
    "choreo_consumer_lag",
    "choreo_outbox_backlog",
    "choreo_rebalances_total",
    "choreo_assigned_partitions",
)
"""The metric families a :class:`WorkerMetrics` exports."""

OTHER: Final = "other"
_TYPE: Final = Header.EVENT_TYPE
_COUNTERS: Final = (
    ("handled", "choreo_events_handled", "Events whose handler succeeded."),
    ("failed", "choreo_events_failed", "Events whose handler raised a BusinessFailure."),
    ("retried", "choreo_events_retried", "Handler attempts that raised and were retried."),
)


class _Shard:
    """One thread's counts.

    ``series`` maps (service, event type) to one list: the duration histogram's
    per-bucket counts (the last bucket is +Inf), then the sum of durations, then the
    handled and failed counts, then a slot for the other outcomes. ``counts`` maps
    (kind, service, event type) to the rarer counts (retries, dead letters).
    """

    __slots__ = ("counts", "series", "started")

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], list[float]] = {}
        self.counts: dict[tuple[str, str, str], int] = {}
        self.started = 0.0


class _WorkerState:
    """What is known of one worker: its partitions, committed offsets, lag, backlog."""

    __slots__ = ("assigned", "backlog", "committed", "lag", "next_lag", "types")

    def __init__(self, types: frozenset[str]) -> None:
        self.types = types
        self.assigned: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.lag: dict[TopicPartition, int] = {}
        self.backlog = 0
        self.next_lag = 0.0


class WorkerMetrics(Middleware):
    """Counts events, latencies, lag, outbox backlog and rebalances (see the module docs).

    ``registry`` (when given) gets this collector registered; otherwise call
    ``registry.register(metrics)`` yourself. One instance may be installed in several
    workers (each series carries its ``service``). ``lag_interval`` is how often, in
    seconds, the worker thread asks the broker for partition ends and the store for its
    outbox's size (0: after every poll); ``lag_timeout`` bounds the ask for the ends (one
    call for all the worker's partitions, made on the worker's thread, so a slow or
    restarting broker delays its next poll by at most this): partitions whose end is not
    told within it have no lag series until the next refresh.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = HANDLER_DURATION_BUCKETS,
        lag_interval: float = 10.0,
        lag_timeout: float = 1.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets))
        buckets_with_inf = len(self.bounds) + 1
        self._sum = buckets_with_inf
        handled, failed, other = buckets_with_inf + 1, buckets_with_inf + 2, buckets_with_inf + 3
        self._handled, self._failed, self._slots = handled, failed, buckets_with_inf + 4
        self._outcome_slot = {outcome: other for outcome in Outcome}
        self._outcome_slot.update({Outcome.HANDLED: handled, Outcome.FAILED: failed})
        self.lag_interval = lag_interval
        self.lag_timeout = lag_timeout
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._shards: list[_Shard] = []
        self._workers: dict[str, _WorkerState] = {}
        self._rebalances: dict[tuple[str, str], int] = {}
        if registry is not None:
            registry.register(self)

    # --- the event path (the handler's thread) ----------------------------------------

    def _shard(self) -> _Shard:
        """Return this thread's shard, creating it on the thread's first event."""
        try:
            shard: _Shard = self._local.shard
        except AttributeError:
            shard = self._local.shard = _Shard()
            with self._lock:
                self._shards.append(shard)
        return shard

    def before_dispatch(self, worker: Worker, event: EventInfo) -> None:
        """Note when the event's dispatch started."""
        try:
            self._local.shard.started = perf_counter()
        except AttributeError:
            self._shard().started = perf_counter()

    def after_dispatch(
        self,
        worker: Worker,
        event: EventInfo,
        outcome: Outcome,
        emitted: Sequence[OutboxRecord],
        error: BaseException | None,
    ) -> None:
        """Observe the dispatch's duration and count its outcome (the per-event hot path)."""
        shard: _Shard = self._local.shard
        elapsed = perf_counter() - shard.started
        key = (worker.service.name, event.event_type)
        series = shard.series.get(key)
        if series is None:
            series = shard.series[key] = [0.0] * (self._slots)
        series[bisect_left(self.bounds, elapsed)] += 1
        series[self._sum] += elapsed
        series[self._outcome_slot[outcome]] += 1

    def on_retry(
        self, worker: Worker, event: EventInfo, attempt: int, delay: float, error: Exception
    ) -> None:
        """Count a retried attempt."""
        counts = self._shard().counts
        counted = ("retried", worker.service.name, event.event_type)
        counts[counted] = counts.get(counted, 0) + 1

    def on_dead_letter(
        self,
        worker: Worker,
        record: Record,
        reason: DeadLetterReason,
        error: BaseException | None,
        attempts: int,
    ) -> None:
        """Count a dead letter under its event type (``other`` when not the service's)."""
        state = self._state(worker)
        event_type = OTHER
        for name, value in record.headers:
            if name == _TYPE:
                text = value.decode("utf-8", "replace")
                event_type = text if text in state.types else OTHER
                break
        counts = self._shard().counts
        counted = (f"dead:{reason.value}", worker.service.name, event_type)
        counts[counted] = counts.get(counted, 0) + 1

    # --- the loop (the worker's thread) --------------------------------------------

    def _state(self, worker: Worker) -> _WorkerState:
        """Return what is known of ``worker`` (created on first use)."""
        name = worker.service.name
        state = self._workers.get(name)
        if state is None:
            service = worker.service
            emitted = (t for spec in service.handlers for t in spec.emitted_types)
            types = frozenset((*service.consumed_types, *emitted))
            with self._lock:
                state = self._workers.setdefault(name, _WorkerState(types))
        return state

    def after_poll(self, worker: Worker, records: list[Record]) -> None:
        """Refresh the consumer lag and the outbox backlog every ``lag_interval`` seconds."""
        state = self._state(worker)
        now = self._clock()
        if now < state.next_lag:
            return
        state.next_lag = now + self.lag_interval
        self._refresh_lag(worker, state)
        state.backlog = worker.inbox.outbox_size(worker.origin)

    def after_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
        """Remember the committed offsets."""
        self._state(worker).committed.update(offsets)

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Count the assignment and note the partitions owned."""
        state = self._state(worker)
        state.assigned.update(partitions)
        state.next_lag = 0.0  # refresh the lag after the next poll
        self._count_rebalance(worker, "assigned")

    def on_revoke(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Count the revocation and forget the partitions' lag."""
        state = self._state(worker)
        state.assigned.difference_update(partitions)
        for tp in partitions:
            state.lag.pop(tp, None)
            state.committed.pop(tp, None)
        self._count_rebalance(worker, "revoked")

    def _count_rebalance(self, worker: Worker, kind: str) -> None:
        key = (worker.service.name, kind)
        with self._lock:
            self._rebalances[key] = self._rebalances.get(key, 0) + 1

    def _refresh_lag(self, worker: Worker, state: _WorkerState) -> None:
        """Ask the consumer for its partitions' ends and recompute the lag."""
        assigned = sorted(state.assigned)
        if not assigned:
            state.lag = {}
            return
        link = getattr(worker.delivery, "link", None)
        ends_of = getattr(getattr(link, "consumer", None), "high_watermarks", None)
        if ends_of is None:  # a consumer that cannot tell: no lag series
            return
        ends: dict[TopicPartition, int] = ends_of(assigned, timeout=self.lag_timeout)
        state.lag = {
            tp: max(0, end - state.committed.get(tp, 0))
            for tp, end in ends.items()
            if tp in state.assigned
        }

    # --- the scrape (the HTTP server's thread) ------------------------------------------

    def describe(self) -> list[Metric]:
        """Return the metric families without samples (so registering reads nothing)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Return the current metric families (called by the registry on each scrape)."""
        with self._lock:
            shards = list(self._shards)
            rebalances = dict(self._rebalances)
            workers = dict(self._workers)
        counts, series = self._merged(shards)
        families = self._families()
        for (kind, service, event_type), count in sorted(counts.items()):
            if kind.startswith("dead:"):
                families["choreo_events_dead_lettered"].add_metric(
                    [service, event_type, kind[5:]], count
                )
            else:
                families[f"choreo_events_{kind}"].add_metric([service, event_type], count)
        for (service, event_type), values in sorted(series.items()):
            labels = [service, event_type]
            families["choreo_events_handled"].add_metric(labels, values[self._handled])
            families["choreo_events_failed"].add_metric(labels, values[self._failed])
            families["choreo_handler_duration_seconds"].add_metric(
                labels, self._buckets(values), values[self._sum]
            )
        for (service, kind), count in sorted(rebalances.items()):
            families["choreo_rebalances"].add_metric([service, kind], count)
        for service, state in sorted(workers.items()):
            families["choreo_outbox_backlog"].add_metric([service], state.backlog)
            families["choreo_assigned_partitions"].add_metric([service], len(state.assigned))
            for tp, lag in sorted(dict(state.lag).items()):
                families["choreo_consumer_lag"].add_metric(
                    [service, tp.topic, str(tp.partition)], lag
                )
        yield from families.values()

    def _merged(
        self, shards: list[_Shard]
    ) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], list[float]]]:
        """Return the counts and series of every thread's shard, added up."""
        counts: dict[tuple[str, str, str], int] = {}
        merged: dict[tuple[str, str], list[float]] = {}
        for shard in shards:
            for key, count in list(shard.counts.items()):
                counts[key] = counts.get(key, 0) + count
            for series, values in list(shard.series.items()):
                total = merged.setdefault(series, [0.0] * self._slots)
                for index, value in enumerate(list(values)):
                    total[index] += value
        return counts, merged

    def _buckets(self, values: list[float]) -> list[tuple[str, float]]:
        """Return cumulative ``(le, count)`` pairs of a series' per-bucket counts."""
        running = 0.0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), values[: self._sum], strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return buckets

    @staticmethod
    def _families() -> dict[str, Any]:
        """Return empty metric families, by name without the ``_total`` suffix."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        families: dict[str, Any] = {
            name: CounterMetricFamily(name, text, labels=["service", "event_type"])
            for _, name, text in _COUNTERS
        }
        families["choreo_events_dead_lettered"] = CounterMetricFamily(
            "choreo_events_dead_lettered",
            "Records sent to the dead-letter topic.",
            labels=["service", "event_type", "reason"],
        )
        families["choreo_handler_duration_seconds"] = HistogramMetricFamily(
            "choreo_handler_duration_seconds",
            "Time to dispatch one event: decode, every attempt, encoding its output.",
            labels=["service", "event_type"],
        )
        families["choreo_consumer_lag"] = GaugeMetricFamily(
            "choreo_consumer_lag",
            "Records between a partition's end and the worker's committed offset.",
            labels=["service", "topic", "partition"],
        )
        families["choreo_outbox_backlog"] = GaugeMetricFamily(
            "choreo_outbox_backlog",
            "Records stored in the outbox and not yet acknowledged by the broker.",
            labels=["service"],
        )
        families["choreo_rebalances"] = CounterMetricFamily(
            "choreo_rebalances",
            "Partition assignments and revocations.",
            labels=["service", "kind"],
        )
        families["choreo_assigned_partitions"] = GaugeMetricFamily(
            "choreo_assigned_partitions",
            "Partitions the worker owns now.",
            labels=["service"],
        )
        return families
