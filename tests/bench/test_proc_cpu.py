"""The /proc CPU meter the benchmarks use for processes they do not run in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.proc_cpu import (  # noqa: E402
    CpuMeter,
    machine_cpu_seconds,
    process_cpu_seconds,
    tree_cpu_seconds,
)


def test_a_busy_child_is_charged_its_cpu_time() -> None:
    """A child that spins for ~0.3 s of CPU shows at least 0.2 s on the meter."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time,sys\nt=time.process_time()\n"
            "while time.process_time()-t<0.3: pass\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        meter = CpuMeter(child.pid)
        meter.start()
        deadline = 50
        while process_cpu_seconds(child.pid) < 0.3 and deadline:
            deadline -= 1
            subprocess.run(["sleep", "0.1"], check=True)
        assert meter.stop() >= 0.2
    finally:
        child.communicate(b"")


def test_a_gone_process_raises_process_lookup_error() -> None:
    """Reading a process that has exited is an error, not a zero."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        process_cpu_seconds(child.pid)


def test_stop_before_start_is_refused() -> None:
    """``stop()`` without ``start()`` says so instead of returning garbage."""
    with pytest.raises(RuntimeError):
        CpuMeter(os.getpid()).stop()


def test_a_tree_meter_counts_live_and_reaped_children() -> None:
    """A child's CPU counts in its parent's tree while it runs and after it was reaped."""
    meter = CpuMeter(os.getpid(), tree=True)
    meter.start()
    busy = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", busy + "input()"], stdin=subprocess.PIPE)
    try:
        deadline = 50
        while process_cpu_seconds(child.pid) < 0.3 and deadline:
            deadline -= 1
            subprocess.run(["sleep", "0.1"], check=True)
        assert tree_cpu_seconds(os.getpid()) - process_cpu_seconds(os.getpid()) >= 0.2
    finally:
        child.communicate(b"\n")
    assert meter.stop() >= 0.2  # reaped: now in this process's cutime


def test_the_machine_meter_moves_forward() -> None:
    """The whole machine's busy CPU seconds never go backwards."""
    first = machine_cpu_seconds()
    assert machine_cpu_seconds() >= first > 0
