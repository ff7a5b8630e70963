"""Prometheus metrics of a saga tracker: sagas per status, stuck sagas, saga durations.

:class:`TrackerMetrics` is a Prometheus collector over a
:class:`~choreo.tracker.tracker.Tracker` (what ``choreo watch`` and ``choreo ui`` feed
with ``--metrics-port``). The gauges are read from the tracker's saga index when
Prometheus scrapes (a few O(log n) counts, nothing on the tracker's feeding path); the
duration histogram is observed as each saga ends, through the tracker's ``on_finished``
callback. Exported names:

- ``choreo_sagas{saga, status}``: sagas the tracker knows, per saga type and status
  (Started, Pending, Compensating, Completed, Failed, Stuck, CompensationFailed,
  Violated);
- ``choreo_sagas_stuck{saga}``: sagas marked stuck (no expected event within the step's
  deadline), whatever status they show first;
- ``choreo_saga_duration_seconds{saga, outcome}``: a histogram of the time from a saga's
  first event to its terminal one, ``outcome`` being its status when it ended.

Saga types come from record headers, so from outside: the first ``max_saga_types`` names
seen get their own label value, the rest are counted under ``"other"``; label values are
cut to 120 characters and unprintable characters replaced by ``?``. A tracker's counts
are of the sagas it holds since it started reading, so after a restart they are rebuilt
from the topics (or the checkpoint).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

from choreo.tracker.model import SagaStatus, SagaTrace
from choreo.tracker.query import SagaQuery

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from choreo.tracker.tracker import Tracker

__all__ = ["SAGA_DURATION_BUCKETS", "TRACKER_METRICS", "TrackerMetrics"]

SAGA_DURATION_BUCKETS: Final = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    86400.0,
)
"""Upper bounds (seconds) of the saga duration histogram's buckets (+Inf is added)."""

TRACKER_METRICS: Final = ("choreo_sagas", "choreo_sagas_stuck", "choreo_saga_duration_seconds")
"""The metric families a :class:`TrackerMetrics` exports."""

OTHER: Final = "other"
"""The label value of saga types beyond ``max_saga_types``."""
_MAX_LABEL: Final = 120


class _Histogram:
    """Cumulative bucket counts, a count and a sum (the caller holds the lock)."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.count = 0
        self.total = 0.0


class TrackerMetrics:
    """A Prometheus collector of ``tracker``'s sagas (see the module docs).

    Creating it sets ``tracker.on_finished``; register it with
    ``registry.register(metrics)``.
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        max_saga_types: int = 50,
        buckets: Sequence[float] = SAGA_DURATION_BUCKETS,
    ) -> None:
        if max_saga_types < 0:
            raise ValueError("max_saga_types must be >= 0")
        self.tracker = tracker
        self.max_saga_types = max_saga_types
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._lock = threading.Lock()
        self._labels: dict[str, str] = {}  # saga type -> its label value
        self._named = 0  # label values other than OTHER handed out
        self._durations: dict[tuple[str, str], _Histogram] = {}
        tracker.on_finished = self._finished

    def _label(self, saga: str) -> str:
        """Return the label value of saga type ``saga`` (the caller holds the lock)."""
        label = self._labels.get(saga)
        if label is not None:
            return label
        if self._named < self.max_saga_types:
            label = "".join(c if c.isprintable() else "?" for c in saga[:_MAX_LABEL])
            label = label or "unknown"
            self._named += 1
        else:
            label = OTHER
        if len(self._labels) < 10 * self.max_saga_types + 10:  # names come from data
            self._labels[saga] = label
        return label

    def _finished(self, trace: SagaTrace) -> None:
        """Observe the duration of a saga that just ended."""
        duration_ms = trace.duration_ms
        if duration_ms is None:
            return
        seconds = max(0.0, min(duration_ms / 1000, 1e9))  # produced-at times come from data
        with self._lock:
            key = (self._label(trace.saga), trace.status.value)
            histogram = self._durations.get(key)
            if histogram is None:
                histogram = self._durations[key] = _Histogram(len(self.bounds) + 1)
            histogram.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
            histogram.count += 1
            histogram.total += seconds

    def describe(self) -> list[Metric]:
        """Return the metric families without samples (so registering reads nothing)."""
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        return [
            GaugeMetricFamily("choreo_sagas", "Sagas", labels=["saga", "status"]),
            GaugeMetricFamily("choreo_sagas_stuck", "Stuck sagas", labels=["saga"]),
            HistogramMetricFamily(
                "choreo_saga_duration_seconds", "Saga durations", labels=["saga", "outcome"]
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        """Return the current metric families (called by the registry on each scrape)."""
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        sagas = GaugeMetricFamily(
            "choreo_sagas",
            "Sagas the tracker knows, per saga type and status.",
            labels=["saga", "status"],
        )
        stuck = GaugeMetricFamily(
            "choreo_sagas_stuck",
            "Sagas with no expected next event within the step's deadline.",
            labels=["saga"],
        )
        for label, counts, stuck_count in self._counts():
            for status, value in counts.items():
                sagas.add_metric([label, status.value], value)
            stuck.add_metric([label], stuck_count)
        yield sagas
        yield stuck
        durations = HistogramMetricFamily(
            "choreo_saga_duration_seconds",
            "Time from a saga's first event to its terminal event.",
            labels=["saga", "outcome"],
        )
        with self._lock:
            snapshot = [
                (key, list(h.buckets), h.total) for key, h in sorted(self._durations.items())
            ]
        for (label, outcome), per_bucket, total in snapshot:
            running, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), per_bucket, strict=True):
                running += count
                buckets.append((_le(bound), float(running)))
            durations.add_metric([label, outcome], buckets, total)
        yield durations

    def _counts(self) -> list[tuple[str, dict[SagaStatus, int], int]]:
        """Return per label value: the sagas per status and the stuck sagas."""
        tracker = self.tracker
        with self._lock:
            for saga in tracker.saga_types():
                self._label(saga)
            names = dict(self._labels)
        per_label: dict[str, tuple[dict[SagaStatus, int], int]] = {}
        for saga, label in names.items():
            if label == OTHER:
                continue
            counts, stuck = per_label.get(label, (dict.fromkeys(SagaStatus, 0), 0))
            for status in SagaStatus:
                counts[status] += tracker.count(SagaQuery(status=status, saga=saga)) or 0
            stuck += tracker.count(SagaQuery(saga=saga, stuck_only=True)) or 0
            per_label[label] = (counts, stuck)
        totals = tracker.counts()
        total_stuck = tracker.count(SagaQuery(stuck_only=True)) or 0
        listed_stuck = sum(s for _, s in per_label.values())
        other = {
            s: max(0, totals[s] - sum(c[s] for c, _ in per_label.values())) for s in SagaStatus
        }
        rows = [(label, counts, s) for label, (counts, s) in sorted(per_label.items())]
        if any(other.values()) or OTHER in names.values():
            rows.append((OTHER, other, max(0, total_stuck - listed_stuck)))
        return rows


def _le(bound: float) -> str:
    """Return a bucket bound as Prometheus writes it (``+Inf`` for infinity)."""
    return "+Inf" if bound == float("inf") else repr(bound)
