"""``choreo demo`` on the in-memory bus: the README's main command, end to end."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from choreo.errors import ConfigurationError
from choreo.tracker import SagaStatus
from services.demo import Demo, DemoOptions


def console_script() -> str:
    """Return the installed ``choreo`` script (failing when it is not installed)."""
    beside_python = Path(sys.executable).with_name("choreo")
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("choreo")
    if found is None:
        pytest.fail("the 'choreo' console script is not installed (pip install -e .)")
    return found


def test_choreo_demo_no_ui_runs_50_orders(tmp_path: Path) -> None:
    """``choreo demo --no-ui --orders 50`` exits 0 and reports every saga ended and undone."""
    result = subprocess.run(
        [console_script(), "demo", "--no-ui", "--orders", "50", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # the demo must not depend on the working directory
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    completed = int(re.search(r"Completed\s*│\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"Failed\s*│\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    assert completed + failed == 50 and completed > 0 and failed > 0
    assert "50 sagas ended" in out
    assert "every failed one was fully undone" in out


def test_demo_result_matches_the_services_state(tmp_path: Path) -> None:
    """A Demo run ends every saga, with a mix of outcomes, and the audit agrees with the tracker."""
    options = DemoOptions(orders=120, seed=5, data_dir=tmp_path)
    with Demo(options) as demo:
        result = demo.run()
        assert demo.tracker.total() == 120
    assert result.ok, result.problems
    assert result.finished and result.ended == 120
    assert result.counts[SagaStatus.COMPLETED] == result.audit.statuses["completed"]
    assert result.counts[SagaStatus.FAILED] == result.audit.statuses["failed"]
    facts = result.audit.facts
    assert facts["declined"] > 0 and facts["refunds"] == facts["cancelled"]
    assert facts["notifications"] == 120
    assert (tmp_path / "payment.sqlite3").exists()  # a given data dir is kept


def test_a_demo_that_cannot_finish_reports_it(tmp_path: Path) -> None:
    """With a timeout too short to end every saga, the result names the sagas left over."""
    with Demo(DemoOptions(orders=200, timeout=0.001, data_dir=tmp_path)) as demo:
        result = demo.run()
    assert not result.ok
    assert any("did not end" in problem for problem in result.problems)


@pytest.mark.parametrize(
    "options",
    [
        {"orders": 0},
        {"transport": "confluent"},
        {"bootstrap": "localhost:9092"},
        {"timeout": 0.0},
    ],
)
def test_invalid_options(options: dict[str, object]) -> None:
    """Impossible demo options are refused before anything starts."""
    with pytest.raises(ConfigurationError):
        DemoOptions(**options)  # type: ignore[arg-type]


def test_silent_dispatches_time_out_and_compensate(tmp_path: Path) -> None:
    """Sagas whose dispatch is silently dropped end Failed through the tracker's timeout."""
    options = DemoOptions(
        orders=80, seed=2, silent_rate=0.1, deadline=1.0, timeout=60.0, data_dir=tmp_path
    )
    with Demo(options) as demo:
        result = demo.run()
        timed_out = [t for t in demo.tracker.sagas(limit=80) if t.timed_out]
    assert result.ok, result.problems
    assert timed_out, "no saga timed out"
    assert all(trace.status is SagaStatus.FAILED for trace in timed_out)
    assert result.audit.facts["cancelled"] >= len(timed_out)
