"""``choreo demo --style orchestrated`` on the in-memory bus: the same shop, one orchestrator."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from e2e.shop_cluster import console_script

from choreo.model.envelope import Role
from choreo.tracker import SagaStatus
from services.demo import Demo, DemoOptions


def test_choreo_demo_style_orchestrated_runs_50_orders(tmp_path: Path) -> None:
    """The command exits 0 with the per-state summary; the default stays choreographed."""
    result = subprocess.run(
        [
            console_script(),
            "demo",
            "--no-ui",
            "--orders",
            "50",
            "--seed",
            "3",
            "--style",
            "orchestrated",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "choreo demo (orchestrated): an orchestrator and 5 services" in out
    completed = int(re.search(r"Completed\s*│\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"Failed\s*│\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    assert completed + failed == 50 and completed > 0 and failed > 0
    assert "every failed one was fully undone" in out


def test_silent_dispatches_time_out_at_the_orchestrator_and_compensate(tmp_path: Path) -> None:
    """Dropped dispatch commands time out (the orchestrator's SagaTimedOut) and are undone."""
    options = DemoOptions(
        orders=80,
        seed=2,
        silent_rate=0.1,
        deadline=1.0,
        timeout=60.0,
        style="orchestrated",
        data_dir=tmp_path,
    )
    with Demo(options) as demo:
        result = demo.run()
        traces = demo.tracker.sagas(limit=80)
    assert result.ok, result.problems
    timed_out = [t for t in traces if t.timed_out]
    assert timed_out, "no saga timed out"
    assert all(t.status is SagaStatus.FAILED for t in timed_out)
    assert {t.saga for t in traces} == {"OrderFulfillmentOrchestrated"}
    timeouts = [e for t in timed_out for e in t.events if e.event_type == "choreo.SagaTimedOut"]
    assert {e.service for e in timeouts} == {"orchestrator"}
    assert all(any(e.role is Role.COMMAND for e in t.events) for t in traces)
    assert result.audit.facts["notifications"] == 80  # notification reacts by choreography


def test_docker_compose_runs_the_orchestrated_variant_on_request() -> None:
    """The orchestrator and its placer are in the ``orchestrated`` profile, validly commanded."""
    import yaml

    from choreo.cli.run_cmd import load_service, run
    from services.placer import main

    repo = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
    services = compose["services"]
    orchestrator, placer = services["orchestrator"], services["orders-orchestrated"]
    assert orchestrator["profiles"] == placer["profiles"] == ["orchestrated"]
    command = [a.replace("/app/", f"{repo}/") for a in orchestrator["command"]]
    with run.make_context("run", command[command.index("run") + 1 :]) as ctx:
        assert ctx.params["target"] == "services.orchestrated:service"
        assert load_service(ctx.params["target"]).name == "orchestrator"
    args = [a.replace("/app/", f"{repo}/") for a in placer["command"][3:]]
    with main.make_context("placer", args) as ctx:
        assert ctx.params["style"] == "orchestrated" and ctx.params["seed"] == 1
    assert placer["depends_on"]["orchestrator"] == {"condition": "service_healthy"}
    # the placer writes its orders into the order service's store, like the choreographed one
    assert placer["environment"]["CHOREO_STORE"] == services["order"]["environment"]["CHOREO_STORE"]
    assert orchestrator["environment"]["CHOREO_STORE"].endswith("schema=orchestrator")
