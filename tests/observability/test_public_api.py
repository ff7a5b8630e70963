"""choreo.observability's exported names are pinned, and importing it loads no extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

import choreo.observability

EXPECTED = {
    "Health", "HealthMiddleware", "JsonFormatter", "ObservabilityServer", "TrackerMetrics",
    "Tracing", "WorkerMetrics", "use_json_logs",
}  # fmt: skip


def test_all_is_pinned() -> None:
    """``choreo.observability.__all__`` lists exactly the promised names."""
    assert set(choreo.observability.__all__) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_name_resolves(name: str) -> None:
    """Every exported name resolves to a real object."""
    assert getattr(choreo.observability, name) is not None


def test_importing_loads_neither_opentelemetry_nor_prometheus() -> None:
    """Importing choreo.observability, its logs and the runtime imports neither extra."""
    code = (
        "import sys, choreo.observability, choreo.observability.logs, choreo.runtime; "
        "print(any(m.split('.')[0] in ('opentelemetry', 'prometheus_client') "
        "for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
