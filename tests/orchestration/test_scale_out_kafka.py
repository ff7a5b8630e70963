"""Two orchestrator replicas on a real broker, one SIGKILLed and one added mid-run.

The example's orchestrator runs as ``choreo run`` replicas in one consumer group (each its
own process, SQLite store and instance id; the consumer session is 6 s so the dead
member's partitions move without waiting 45 s); the five services run as theirs. Mid-way
through the orders replica 1 is SIGKILLed for good and replica 2 joins: the survivors get
its partitions, rebuild their sagas from the log and go on. Then every saga must be
Completed or Failed with no violation, the services' own state must show that no command
was handled twice (the audit counts charges, stock movements, shipments), the log must
hold one command per step and saga (nothing decided twice), every saga's records must sit
on one partition number, and ``choreo verify`` must pass.

Slow by nature (about 30 s: eight processes, two rebalances and a 6 s session timeout),
so it is marked ``slow``; 120 orders keep it there.
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

ORDERS = 120
TIMEOUT_S = 90.0


@pytest.fixture
def cluster(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OrchestratedCluster]:
    """Yield an orchestrated shop (20% declined, 5% failed dispatches); closed afterwards."""
    monkeypatch.setenv("SHOP_STEP_DEADLINE", "120")  # no timeout: only the moves are tested
    monkeypatch.setenv("CHOREO_KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "6000")
    with orchestrated_shop(kafka_bootstrap, tmp_path, seed=47) as made:
        yield made


def _wait_for(cluster: OrchestratedCluster, what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        cluster.check_alive()
        assert time.monotonic() < deadline, f"{what}\n{cluster.log_text()}"
        time.sleep(0.05)


def _log(cluster: OrchestratedCluster, replica: str) -> str:
    """Return ``replica``'s log with its lines unwrapped (the console wraps long lines)."""
    return " ".join((cluster.workdir / f"{replica}.1.log").read_text(errors="replace").split())


def test_replicas_share_the_sagas_through_a_kill_and_a_join(
    cluster: OrchestratedCluster,
) -> None:
    """SIGKILL replica 1 and add replica 2 mid-run: all end, nothing commanded or run twice."""
    cluster.start("orchestrator-0", "orchestrator-1")
    owns = "owns the sagas of partition(s) ["
    _wait_for(
        cluster,
        "both replicas own partitions",
        lambda: all(owns in _log(cluster, f"orchestrator-{n}") for n in (0, 1)),
        TIMEOUT_S,
    )
    # half the orders before the kill, half after: the kill falls mid-run however fast
    # the replicas are (all 120 placed at once have ended before it, on a fast run)
    half = slice(None, ORDERS // 2)
    cluster.place_orchestrated(ORDERS, seed=47, part=half)
    _wait_for(cluster, "a quarter ended", lambda: cluster.ended() >= ORDERS // 4, TIMEOUT_S)
    cluster.kill("orchestrator-1")
    del cluster.processes["orchestrator-1"]  # dead for good
    cluster.place_orchestrated(ORDERS, seed=47, part=slice(ORDERS // 2, None))
    cluster.starts["orchestrator-2"] = 0
    cluster.start_service("orchestrator-2")
    try:
        cluster.wait_until_ended(ORDERS, TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{_unended(cluster)}\n{exc}") from None

    # replica 2 joined and owned a share; replica 0 took part of the dead one's share
    _wait_for(cluster, "replica 2 owns", lambda: owns in _log(cluster, "orchestrator-2"), 30)
    assert "revoked" in _log(cluster, "orchestrator-0")
    counts = cluster.tracker.counts()
    assert counts[SagaStatus.COMPLETED] + counts[SagaStatus.FAILED] == ORDERS, counts
    for status in (SagaStatus.VIOLATED, SagaStatus.STUCK, SagaStatus.COMPENSATION_FAILED):
        assert counts[status] == 0, counts
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.facts["notifications"] == ORDERS
    assert report.facts["dispatched"] == counts[SagaStatus.COMPLETED]
    repeated = []
    for request in sample_orders(ORDERS, seed=47):
        trace = cluster.tracker.get(request.order_id)
        assert trace is not None
        sent = Counter(
            e.event_type for e in trace.events if e.role in (Role.COMMAND, Role.COMPENSATE)
        )
        repeated.extend(f"{trace.correlation_id} {t} x{n}" for t, n in sent.items() if n > 1)
    assert repeated == [], repeated[:10]
    _assert_one_partition_per_saga(cluster)
    verified = cluster.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _assert_one_partition_per_saga(cluster: OrchestratedCluster) -> None:
    """Every record of a saga, on every topic of the run, sits on one partition number."""
    spread = {}
    for request in sample_orders(ORDERS, seed=47):
        trace = cluster.tracker.get(request.order_id)
        assert trace is not None
        parts = {e.partition for e in trace.events}
        if len(parts) != 1:
            spread[trace.correlation_id] = parts
    assert spread == {}, list(spread.items())[:5]


def _unended(cluster: OrchestratedCluster) -> str:
    """Describe the sagas the tracker has not seen end (for a failure message)."""
    lines = []
    for request in sample_orders(ORDERS, seed=47):
        trace = cluster.tracker.get(request.order_id)
        if trace is None or trace.state.value in ("Completed", "Failed"):
            continue
        lines.append(f"{request.order_id} {trace.state}:")
        lines.extend(
            f"  {e.event_type} {e.role} {e.service} id={e.event_id[:8]} "
            f"cause={(e.causation_id or '')[:8]} {e.topic}[{e.partition}]@{e.offset}"
            for e in trace.events
        )
    return "\n".join(lines[:200])
