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


@pytest.mark.parametrize("impl", bench_pingpong.IMPLEMENTATIONS)
def test_each_pingpong_implementation_answers_every_hop_once(
    impl: str, kafka_bootstrap: str
) -> None:
    """choreo, the ceiling and FastStream each answer 5 round trips, no duplicate (~5 s each)."""
    row = bench_pingpong.run_once(kafka_bootstrap, impl, hops=5, partitions=1)
    assert row["ok"], row
    assert 0 < row["p50_ms"] <= row["max_ms"]
