"""``choreo demo --bootstrap``: the demo on a real Kafka broker, through the installed script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def console_script() -> str:
    """Return the installed ``choreo`` script (failing when it is not installed)."""
    beside_python = Path(sys.executable).with_name("choreo")
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("choreo")
    if found is None:
        pytest.fail("the 'choreo' console script is not installed (pip install -e .)")
    return found


@pytest.mark.parametrize("transport", ["confluent", "kafka-python"])
def test_choreo_demo_on_kafka(kafka_bootstrap: str, transport: str, tmp_path: Path) -> None:
    """The demo places 50 orders on Kafka; every saga ends and the state audit is clean."""
    result = subprocess.run(
        [
            console_script(),
            "demo",
            "--no-ui",
            "--orders",
            "50",
            "--bootstrap",
            kafka_bootstrap,
            "--transport",
            transport,
            "--timeout",
            "90",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "50 sagas ended" in result.stdout
    assert "every failed one was fully undone" in result.stdout
