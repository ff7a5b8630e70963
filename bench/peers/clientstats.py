"""What a service process's Kafka clients did over the timed phase: threads, requests, batches.

Two diagnostics, both read inside the service process (:mod:`bench.peers.service`):

- **CPU by thread kind** (always on): :func:`thread_cpu` sums the on-CPU time of the
  process's librdkafka threads (named ``rdk:*``) from ``/proc/self/task/*/schedstat``
  (nanoseconds); the rest of the process's CPU time is its Python threads (the loop,
  which also runs the client calls it makes, and the harness's stdin watcher).
- **Client statistics** (``--client-stats``): every confluent-kafka client gets
  ``statistics.interval.ms`` and a ``stats_cb`` (:meth:`ClientStats.settings`);
  :class:`ClientStats` keeps each client's cumulative request counts (ProduceRequests,
  Fetches, OffsetCommits, ... over every broker connection), messages sent and received,
  and the loop's own counts (:meth:`ClientStats.batch`: polled batches and their
  records, each followed by one flush). :meth:`ClientStats.mark` notes the start and end
  of a metered phase; :meth:`ClientStats.phase` is what happened between the last two
  marks, read from each client's first statistics emitted after each mark (librdkafka
  stamps them with its monotonic clock, which is Python's ``time.monotonic``). Statistics
  cost a JSON document per client and interval: leave them off in recorded runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

STATS_INTERVAL_MS: Final = 100
_COUNTED: Final = ("Produce", "Fetch", "OffsetCommit", "Heartbeat", "Metadata", "ListOffsets")


def thread_cpu() -> float:
    """Return the CPU seconds this process's librdkafka threads (``rdk:*``) have used so far.

    Threads that ended are not counted; librdkafka's live as long as their client.
    """
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("rdk:"):
                continue
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return total / 1e9


def thread_times() -> dict[int, tuple[str, int]]:
    """Return every live thread of this process: tid -> (name, on-CPU nanoseconds so far)."""
    times: dict[int, tuple[str, int]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            times[int(task.name)] = (name, int((task / "schedstat").read_text().split()[0]))
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return times


def _summary(stats: Mapping[str, Any]) -> dict[str, int]:
    """Return the cumulative counters of one statistics document (summed over brokers)."""
    counts = {name: 0 for name in _COUNTED}
    for broker in stats.get("brokers", {}).values():
        for name, value in broker.get("req", {}).items():
            if name in counts:
                counts[name] += int(value)
    counts["txmsgs"] = int(stats.get("txmsgs", 0))
    counts["rxmsgs"] = int(stats.get("rxmsgs", 0))
    counts["tx"] = int(stats.get("tx", 0))
    counts["rx"] = int(stats.get("rx", 0))
    return counts


class ClientStats:
    """Collects the statistics of every client of this process and the loop's batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, list[tuple[float, dict[str, int]]]] = {}
        self._batches: list[tuple[float, int]] = []
        self._marks: list[float] = []
        self._threads: list[dict[int, tuple[str, int]]] = []

    def settings(self) -> dict[str, Any]:
        """Return the librdkafka settings that send this client's statistics here."""
        return {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self._on_stats}

    def _on_stats(self, text: str) -> None:
        stats = json.loads(text)
        entry = (int(stats["ts"]) / 1e6, _summary(stats))
        with self._lock:
            self._docs.setdefault(f"{stats['type']}:{stats['name']}", []).append(entry)

    def batch(self, records: int) -> None:
        """Count one polled batch of ``records`` (> 0) that the loop handles and flushes."""
        self._batches.append((time.monotonic(), records))

    def mark(self) -> None:
        """Note the start or the end of a metered phase (and each thread's CPU time)."""
        self._marks.append(time.monotonic())
        self._threads.append(thread_times())

    def phase(self) -> dict[str, int]:
        """Return the counts between the last two marks, summed by client kind."""
        if len(self._marks) < 2:
            return {}
        start, end = self._marks[-2:]
        totals: dict[str, int] = {}
        with self._lock:
            docs = {name: list(entries) for name, entries in self._docs.items()}
        for name, entries in docs.items():
            # before the phase the services are idle: the last document before it will do
            before = next((c for ts, c in reversed(entries) if ts <= start), None)
            after = next((c for ts, c in entries if ts >= end), entries[-1][1] if entries else None)
            if before is None or after is None:
                continue
            kind = name.split(":", 1)[0]
            for key, value in after.items():
                total_key = f"{kind}_{key}"
                totals[total_key] = totals.get(total_key, 0) + value - before[key]
        timed = [n for at, n in self._batches if start <= at <= end]
        totals["batches"] = len(timed)
        totals["batch_records"] = sum(timed)
        return totals

    def threads(self) -> list[tuple[int, str, float]]:
        """Return (tid, name, CPU ms) of each thread between the last two marks, by tid."""
        if len(self._threads) < 2:
            return []
        first, last = self._threads[-2:]
        return [
            (tid, name, round((ns - first.get(tid, (name, 0))[1]) / 1e6, 2))
            for tid, (name, ns) in sorted(last.items())
        ]


_ENABLED: Final[list[ClientStats]] = []  # this process's collector, once enabled


def enable() -> ClientStats:
    """Collect the statistics of every client created from now on in this process."""
    if not _ENABLED:
        _ENABLED.append(ClientStats())
    return _ENABLED[0]


def recorder() -> ClientStats | None:
    """Return this process's collector, or None unless ``--client-stats`` enabled it."""
    return _ENABLED[0] if _ENABLED else None


def settings() -> dict[str, Any]:
    """Return the statistics settings for a new client (none without ``--client-stats``)."""
    return _ENABLED[0].settings() if _ENABLED else {}


def count_batch(records: int) -> None:
    """Count a polled batch (nothing without ``--client-stats``)."""
    if _ENABLED and records:
        _ENABLED[0].batch(records)
