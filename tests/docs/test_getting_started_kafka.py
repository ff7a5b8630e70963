"""Getting started, steps 8 and 9, on a real Kafka broker: the commands the page shows work.

The example project (docs/examples/getting_started) is copied to a temporary directory;
its two services run as ``choreo run`` processes, ``book.py`` starts a paid and a refused
booking, and ``choreo trace`` / ``choreo verify`` read how they ended. Each run uses its
own consumer groups reading from the end of the topics, and its own booking ids, so a
shared broker with earlier runs' events gives the same result.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "getting_started"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait until the worker's /readyz answers 200 (its consumer group is joined)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the worker exited before it was ready"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"worker on metrics port {port} not ready after {timeout} s")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    target = tmp_path / "getting_started"
    shutil.copytree(PROJECT, target, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return target


@pytest.fixture
def env(kafka_bootstrap: str, project: Path) -> dict[str, str]:
    environ = dict(os.environ)
    environ["CHOREO_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    environ["CHOREO_KAFKA_CONSUMER_AUTO_OFFSET_RESET"] = "latest"
    repo = str(PROJECT.parents[2])
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(project), repo, *filter(None, [environ.get("PYTHONPATH")])]
    )
    return environ


@pytest.fixture
def workers(project: Path, env: dict[str, str]) -> Iterator[None]:
    run_id = uuid.uuid4().hex[:8]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for service in ("rooms", "booking"):
            port = _free_port()
            log = (project / f"{service}.log").open("wb")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "choreo",
                    "run",
                    f"hotel:{service}",
                    "--schemas",
                    "schemas/",
                    "--group",
                    f"{service}-{run_id}",
                    "--metrics-port",
                    str(port),
                ],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            _wait_ready(port, proc)
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                assert proc.wait(timeout=60) == 0, "a worker did not stop cleanly on SIGTERM"
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def _choreo(
    args: list[str], project: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run a tracker command; it reads the topics from the start (no worker offset reset)."""
    env = {k: v for k, v in env.items() if k != "CHOREO_KAFKA_CONSUMER_AUTO_OFFSET_RESET"}
    return subprocess.run(
        [sys.executable, "-m", "choreo", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _trace_until(cid: str, status: str, project: Path, env: dict[str, str]) -> str:
    end = time.monotonic() + 120
    out = ""
    while time.monotonic() < end:
        result = _choreo(["trace", cid, "--topics", r"^hotel\."], project, env)
        out = result.stdout + result.stderr
        if result.returncode == 0 and status in out:
            return out
        time.sleep(1)
    raise AssertionError(f"saga {cid} did not reach {status}:\n{out}")


@pytest.mark.usefixtures("workers")
def test_getting_started_runs_on_kafka(project: Path, env: dict[str, str]) -> None:
    paid, refused = f"b-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    for booking_id, guest, card in ((paid, "Ada", "4242"), (refused, "Bob", "0000")):
        result = subprocess.run(
            [sys.executable, "book.py", booking_id, guest, card],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"booking {booking_id} requested" in result.stdout

    assert "BookingConfirmed" in _trace_until(paid, "Completed", project, env)
    trace = _trace_until(refused, "Failed", project, env)
    for event in ("PaymentRefused", "RoomReleased", "BookingRejected"):
        assert event in trace

    verify = _choreo(["verify", "--topics", r"^hotel\."], project, env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "no violation" in verify.stdout


@pytest.mark.usefixtures("workers")
def test_getting_started_viewer_shows_the_sagas(project: Path, env: dict[str, str]) -> None:
    booking_id = f"b-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "book.py", booking_id, "Cy", "4242"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    port = _free_port()
    ui_env = {k: v for k, v in env.items() if k != "CHOREO_KAFKA_CONSUMER_AUTO_OFFSET_RESET"}
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "choreo",
            "ui",
            "--schemas",
            "schemas/",
            "--port",
            str(port),
            "--topics",
            r"^hotel\.",
        ],
        cwd=project,
        env=ui_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end, body = time.monotonic() + 120, ""
        while time.monotonic() < end and f'"{booking_id}"' not in body:
            time.sleep(1)
            try:
                url = f"http://127.0.0.1:{port}/api/sagas"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = response.read().decode()
            except (urllib.error.URLError, OSError):
                continue
        assert f'"correlation_id":"{booking_id}"' in body.replace(" ", ""), body[:500]
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
