"""SIGKILL the orchestrator process mid-saga on a real broker: every saga still ends, once.

The example's orchestrator runs as its own ``choreo run`` process; the five services run as
theirs (as in the e2e test). Mid-way through 300 orders the orchestrator is SIGKILLed and
restarted: it rebuilds every saga from the topics and goes on. Then every saga must be
Completed or Failed with no violation, the services' own state must show that nothing ran
twice (one charge, one stock movement each way, one shipment per order: the audit), and
the log must hold exactly one command per step and saga (nothing decided twice).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from orch_cluster import OrchestratedCluster, orchestrated_shop

from choreo.model.envelope import Role
from choreo.tracker import SagaStatus
from services.catalog import sample_orders

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ORDERS = 300
TIMEOUT_S = 150.0


@pytest.fixture
def cluster(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OrchestratedCluster]:
    """Yield an orchestrated shop (20% declined, 5% failed dispatches); closed afterwards."""
    monkeypatch.setenv("SHOP_STEP_DEADLINE", "120")  # no timeout: only the kill is tested
    with orchestrated_shop(kafka_bootstrap, tmp_path, seed=31) as made:
        yield made


def test_the_orchestrator_killed_mid_saga_resumes_every_saga_and_repeats_nothing(
    cluster: OrchestratedCluster,
) -> None:
    """SIGKILL after a quarter of the sagas ended, restart: all end, each step ran once."""
    cluster.start()
    # half the orders first; the other half once a quarter ended, just before the kill, so
    # the kill falls mid-run however fast the sagas end (the tracker's count of those
    # ended could jump past the last one between the wait and the kill)
    cluster.place_orchestrated(ORDERS, seed=31, part=slice(None, ORDERS // 2))
    deadline = time.monotonic() + TIMEOUT_S
    while cluster.ended() < ORDERS // 4:
        cluster.check_alive()
        assert time.monotonic() < deadline, cluster.log_text()
        time.sleep(0.05)
    cluster.place_orchestrated(ORDERS, seed=31, part=slice(ORDERS // 2, None))
    in_flight = ORDERS - cluster.ended()
    cluster.kill("orchestrator")
    assert in_flight > 0
    time.sleep(1.0)
    cluster.start_service("orchestrator")
    cluster.wait_until_ended(ORDERS, TIMEOUT_S)
    assert cluster.starts["orchestrator"] == 2
    # The sagas can all end before the restarted process has logged its rebuild (the
    # first one may finish the in-flight sagas between the count and the kill): poll.
    log = cluster.workdir / "orchestrator.2.log"
    deadline = time.monotonic() + TIMEOUT_S
    while "rebuilt" not in (restarted := log.read_text(errors="replace")):
        cluster.check_alive()
        assert time.monotonic() < deadline, restarted[-2000:]
        time.sleep(0.1)

    counts = cluster.tracker.counts()
    assert counts[SagaStatus.COMPLETED] + counts[SagaStatus.FAILED] == ORDERS, counts
    for status in (SagaStatus.VIOLATED, SagaStatus.STUCK, SagaStatus.COMPENSATION_FAILED):
        assert counts[status] == 0, counts
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.statuses == {
        "completed": counts[SagaStatus.COMPLETED],
        "failed": counts[SagaStatus.FAILED],
    }
    assert report.facts["notifications"] == ORDERS
    assert report.facts["dispatched"] == counts[SagaStatus.COMPLETED]
    repeated = []
    for request in sample_orders(ORDERS, seed=31):
        trace = cluster.tracker.get(request.order_id)
        assert trace is not None
        sent = Counter(
            e.event_type for e in trace.events if e.role in (Role.COMMAND, Role.COMPENSATE)
        )
        repeated.extend(f"{trace.correlation_id} {t} x{n}" for t, n in sent.items() if n > 1)
    assert repeated == [], repeated[:10]
    verified = cluster.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
