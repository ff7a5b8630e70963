"""The peers benchmark's client diagnostics: librdkafka thread CPU and statistics per phase."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import confluent_kafka as ck

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.peers.clientstats import ClientStats, thread_cpu, thread_times  # noqa: E402


def _doc(ts: float, kind: str, produce: int, fetch: int, txmsgs: int) -> str:
    """Return a librdkafka statistics document (the fields the collector reads)."""
    stats: dict[str, Any] = {
        "name": f"rdkafka#{kind}-1",
        "type": kind,
        "ts": int(ts * 1e6),
        "txmsgs": txmsgs,
        "rxmsgs": 0,
        "tx": produce + fetch,
        "rx": produce + fetch,
        "brokers": {
            "127.0.0.1:9092/1": {"req": {"Produce": produce, "Fetch": fetch, "ApiVersion": 1}},
            "GroupCoordinator": {"req": {"Produce": 0, "Fetch": 0, "OffsetCommit": 2}},
        },
    }
    return json.dumps(stats)


def test_phase_counts_requests_and_batches_between_the_last_two_marks() -> None:
    """A phase's counts are the first document after its end minus the last before its start."""
    stats = ClientStats()
    on_stats = stats.settings()["stats_cb"]
    now = time.monotonic()
    on_stats(_doc(now - 2.0, "producer", produce=5, fetch=0, txmsgs=50))
    on_stats(_doc(now - 1.0, "producer", produce=7, fetch=0, txmsgs=70))  # last before start
    stats._marks.append(now - 0.5)
    stats.batch(40)
    stats.batch(60)
    stats._marks.append(now + 0.5)
    on_stats(_doc(now + 0.6, "producer", produce=10, fetch=0, txmsgs=170))  # first after end
    on_stats(_doc(now + 5.0, "producer", produce=99, fetch=0, txmsgs=999))
    phase = stats.phase()
    assert phase["producer_Produce"] == 3
    assert phase["producer_txmsgs"] == 100
    assert phase["producer_Fetch"] == 0
    assert phase["batches"] == 2
    assert phase["batch_records"] == 100


def test_thread_cpu_counts_only_the_librdkafka_threads() -> None:
    """A real client's ``rdk:*`` threads are counted; the Python threads are not."""
    producer = ck.Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    try:
        names = {name for name, _ in thread_times().values()}
        assert any(name.startswith("rdk:") for name in names)
        rdk = thread_cpu()
        python_only = sum(ns for name, ns in thread_times().values() if not name.startswith("rdk:"))
        assert 0.0 <= rdk < time.process_time()
        assert python_only > 0
    finally:
        producer.purge()
        producer.flush(0)
