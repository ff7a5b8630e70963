"""The example shop on a real broker, one OS process per service: 1,000 orders end to end.

Every saga must end Completed or Failed; every failed one must have really undone its
state in each service's SQLite file, every completed one must have undone nothing; the
tracker's counts must equal the services' own state and ``choreo verify`` must find no
violation. The second run SIGKILLs the payment service mid-way and restarts it: the same
must hold, and nothing may happen twice (no double charge, no double stock movement).
Wall time and sagas/s are written to ``tests/artifacts/e2e_shop.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo.tracker import SagaStatus
from services.config import ServiceConfig

from .shop_cluster import REPO, ShopCluster

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ORDERS = 1_000
TIMEOUT_S = 150.0
ARTIFACTS = REPO / "tests" / "artifacts"


def shop_config(seed: int) -> ServiceConfig:
    """Return the e2e configuration: 20% declined payments, 5% failed dispatches."""
    return ServiceConfig(seed=seed, decline_rate=0.2, dispatch_failure_rate=0.05)


@pytest.fixture
def make_cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[type[ShopCluster]]:
    """Yield a factory of clusters that are all closed at the end of the test."""
    made: list[ShopCluster] = []

    def make(config: ServiceConfig) -> ShopCluster:
        cluster = ShopCluster(kafka_bootstrap, tmp_path, config)
        made.append(cluster)
        return cluster

    yield make  # type: ignore[misc]
    for cluster in made:
        cluster.close()


def record(name: str, orders: int, seconds: float, placing: float) -> None:
    """Append one run's timing to the artifacts file (performance is reported, not asserted)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "e2e_shop.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[name] = {
        "orders": orders,
        "seconds": round(seconds, 2),
        "sagas_per_s": round(orders / seconds, 1),
        "placing_orders_s": round(placing, 2),
    }
    path.write_text(json.dumps(runs, indent=2) + "\n")


def assert_consistent(cluster: ShopCluster, orders: int) -> None:
    """Check every invariant of a finished run (see the module docstring)."""
    counts = cluster.tracker.counts()
    assert counts[SagaStatus.COMPLETED] + counts[SagaStatus.FAILED] == orders, counts
    for status in (
        SagaStatus.STARTED,
        SagaStatus.PENDING,
        SagaStatus.COMPENSATING,
        SagaStatus.STUCK,
        SagaStatus.VIOLATED,
        SagaStatus.COMPENSATION_FAILED,
    ):
        assert counts[status] == 0, counts
    assert cluster.tracker.stats.dead_letters == 0
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.statuses == {
        "completed": counts[SagaStatus.COMPLETED],
        "failed": counts[SagaStatus.FAILED],
    }
    facts = report.facts
    assert 0.1 * orders < facts["declined"] < 0.3 * orders, facts
    assert facts["cancelled"] > 0 and facts["refunds"] == facts["cancelled"], facts
    assert facts["dispatched"] == counts[SagaStatus.COMPLETED], facts
    assert facts["charges"] == facts["dispatched"] + facts["cancelled"], facts
    assert facts["notifications"] == orders, facts
    verified = cluster.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_thousand_orders_across_five_processes(make_cluster: type[ShopCluster]) -> None:
    """1,000 orders with declines and failed dispatches all end, with their state consistent."""
    cluster = make_cluster(shop_config(seed=21))  # type: ignore[call-arg]
    started = time.monotonic()
    cluster.start()
    placing = time.monotonic()
    cluster.place(ORDERS, seed=21)
    placing = time.monotonic() - placing
    cluster.wait_until_ended(ORDERS, TIMEOUT_S)
    record("clean", ORDERS, time.monotonic() - started, placing)
    assert_consistent(cluster, ORDERS)


def test_a_service_killed_mid_way_does_nothing_twice(make_cluster: type[ShopCluster]) -> None:
    """SIGKILL the payment service mid-run and restart it: no double charge, all sagas end."""
    cluster = make_cluster(shop_config(seed=22))  # type: ignore[call-arg]
    started = time.monotonic()
    cluster.start()
    killed_at: list[float] = []

    def maybe_kill(placed: int) -> None:
        if placed == ORDERS // 3:
            cluster.wait_until_charged(ORDERS // 10, timeout=TIMEOUT_S)
            cluster.kill("payment")
            killed_at.append(time.monotonic())
        elif placed == 2 * ORDERS // 3:
            cluster.start_service("payment")

    placing = time.monotonic()
    cluster.place(ORDERS, seed=22, on_each=maybe_kill)
    placing = time.monotonic() - placing
    cluster.wait_until_ended(ORDERS, TIMEOUT_S)
    record("payment-killed", ORDERS, time.monotonic() - started, placing)
    assert killed_at and cluster.starts["payment"] == 2
    assert_consistent(cluster, ORDERS)
