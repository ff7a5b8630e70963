"""The small chaos run: 10 service processes on a real broker and PostgreSQL, three faults.

``scripts/chaos.py`` places 100 orders per scenario while it SIGKILLs random replicas,
writes poison records and SIGTERMs a replica of every service; after each scenario every
figure must be 0 (nothing lost or done twice, no oversell, every saga terminal, ``choreo
verify`` clean, the tracker agreeing with the databases). The JSON line it prints is kept
in ``tests/artifacts/chaos_small.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FIGURES = (
    "lost",
    "duplicate_side_effects",
    "oversold",
    "not_terminal",
    "verify_findings",
    "tracker_mismatches",
    "duplicate_records",
)
SCENARIOS = ["kill-random", "poison", "sigterm-drain"]


@pytest.mark.timeout(900)
def test_three_scenarios_with_two_replicas_leave_every_figure_at_zero(postgres_url: str) -> None:
    """Random SIGKILLs, poison records and SIGTERM drains: nothing lost, nothing twice.

    The harness starts a broker of its own (its scenarios may kill brokers) and creates a
    database per scenario on the session's PostgreSQL server (``$CHOREO_POSTGRES_URL``),
    instead of starting another server.
    """
    env = {k: v for k, v in os.environ.items() if k != "CHOREO_KAFKA_BOOTSTRAP"}
    env["CHOREO_POSTGRES_URL"] = postgres_url
    result = subprocess.run(
        [
            sys.executable,
            "scripts/chaos.py",
            "--orders",
            "100",
            "--replicas",
            "2",
            "--scenarios",
            ",".join(SCENARIOS),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line (exit {result.returncode}):\n{result.stderr[-4000:]}"
    report = json.loads(lines[-1])
    artifacts = REPO_ROOT / "tests" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "chaos_small.json").write_text(json.dumps(report, indent=2) + "\n")

    assert report["scenarios"] == SCENARIOS
    assert report["replicas"] == 2
    assert report["orders"] == 300
    figures = {key: report[key] for key in FIGURES}
    findings = {s["name"]: s["details"] for s in report["per_scenario"]}
    assert figures == dict.fromkeys(FIGURES, 0), json.dumps(findings, indent=1)[:6000]
    assert report["completed"] + report["failed"] == report["orders"]
    assert report["completed"] > 0 and report["failed"] > 0  # both outcomes were exercised
    assert report["dead_letters"] > 0, "the poison records must reach the dead-letter topics"
    assert result.returncode == 0
