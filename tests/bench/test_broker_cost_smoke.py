"""Smoke tests of the broker-cost and ping-pong benchmarks' correctness paths, tiny sizes.

Each test starts real service processes (Python start-up and a consumer group join
each, a few seconds on this machine) against the session's broker: the figures are not
looked at, only that every saga (or hop) ended once with the right outcome, every
service's final state is the expected one, and the request counts were read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench import bench_broker_cost, bench_pingpong  # noqa: E402

pytestmark = pytest.mark.kafka


def test_a_saga_run_on_a_wider_layout_with_a_commit_interval_is_correct(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Four service processes on the per-namespace layout end 20 sagas correctly (~10 s)."""
    variant = {"layout": "namespace", "worker": {"commit_interval": 0.5},
               "producer": {"linger.ms": 1}}
    row = bench_broker_cost.run_once(
        kafka_bootstrap, os.getpid(), "smoke", variant, sagas=20, rate=0, partitions=2,
        workdir=tmp_path,
    )
    assert row["ok"], row
    assert row["ended"] == 20 and row["states_ok"] and row["wrong_outcomes"] == 0
    # librdkafka's statistics arrive on an interval: a 20-saga run can end before the
    # producers' first report (seen under load), so require only that requests were counted.
    assert row["requests_per_saga"].get("Fetch", 0) > 0


def test_the_produce_probe_counts_one_librdkafka_request_per_partition_of_a_flush(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """choreo's confluent producer sends one Produce request per partition of a flush
    (librdkafka puts one partition in each request; the broker-cost findings rest on it),
    and kafka-python's flushes are measured too (~3 s)."""
    rows = bench_broker_cost.produce_probe(kafka_bootstrap, os.getpid(), tmp_path, flushes=20)
    by_shape = {(r["transport"], r["shape"]): r for r in rows}
    assert by_shape["confluent", "1 record"]["produce_requests_per_flush"] == 1.0
    assert by_shape["confluent", "6 records, 1 partition"]["produce_requests_per_flush"] == 1.0
    assert by_shape["confluent", "6 records, 6 partitions"]["produce_requests_per_flush"] == 6.0
    kafka_python = [r for r in rows if r["transport"] == "kafka-python"]
    assert len(kafka_python) == 3 and all(r["flush_ms"] > 0 for r in kafka_python)


@pytest.mark.parametrize("impl", bench_pingpong.IMPLEMENTATIONS)
def test_each_pingpong_implementation_answers_every_hop_once(
    impl: str, kafka_bootstrap: str
) -> None:
    """choreo, the ceiling and FastStream each answer 5 round trips, no duplicate (~5 s each)."""
    row = bench_pingpong.run_once(kafka_bootstrap, impl, hops=5, partitions=1)
    assert row["ok"], row
    assert 0 < row["p50_ms"] <= row["max_ms"]
