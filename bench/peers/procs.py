"""The service processes of one run: start them, meter their CPU, stop them, read their states.

Each service (and each replica of it) is a ``python -m bench.peers.service`` process
(:mod:`bench.peers.service`) started directly, without a shell. Each reports its own CPU
time (``time.process_time``, every thread, in nanoseconds, and its librdkafka threads'
share) when asked on its stdin, at the start and the end of the timed phase. A :class:`Fleet` starts
them all at once, waits until each printed ``ready``, and at the end closes their stdin
(the signal to stop), waits for them, and collects what each wrote: its state dict and
the error that stopped it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.proc_cpu import peak_rss_mb

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


@dataclass
class ServiceProcess:
    """One service replica's process and what it reported."""

    service: str
    replica: int
    process: subprocess.Popen[str]
    state_out: Path
    stderr: IO[str]
    ready: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)
    cpu_reading: float | None = None
    rdk_reading: float | None = None
    cpu_start: float | None = None
    rdk_start: float | None = None
    cpu_s: float | None = None
    rdk_cpu_s: float | None = None
    peak_rss_mb: float | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def watch_stdout(self) -> None:
        """Set :attr:`ready` when the process says so (a thread per process)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            words = line.split()
            if words == ["ready"]:
                self.ready.set()
            elif len(words) == 3 and words[0] == "cpu":
                self.cpu_reading, self.rdk_reading = float(words[1]), float(words[2])
                self.answered.set()

    def ask_cpu(self) -> None:
        """Ask the process for its CPU seconds so far (the answer comes on stdout)."""
        self.answered.clear()
        assert self.process.stdin is not None
        self.process.stdin.write("cpu\n")
        self.process.stdin.flush()

    def cpu_seconds(self, timeout: float = 10.0) -> float:
        """Return the CPU seconds the process reported after :meth:`ask_cpu`."""
        if not self.answered.wait(timeout) or self.cpu_reading is None:
            raise RuntimeError(f"{self.service}-{self.replica} did not report its CPU time")
        return self.cpu_reading

    def stderr_tail(self, lines: int = 12) -> list[str]:
        """Return the last lines the process wrote to stderr."""
        self.stderr.flush()
        with contextlib.suppress(OSError):
            return Path(self.stderr.name).read_text(errors="replace").splitlines()[-lines:]
        return []


class Fleet:
    """Every service process of one run (see the module docs)."""

    def __init__(self, args: list[str], services: list[tuple[str, int]]) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="peers-fleet-")
        scratch = Path(self._scratch.name)
        self.members: list[ServiceProcess] = []
        for service, replica in services:
            name = f"{service}-{replica}"
            stderr = (scratch / f"{name}.err").open("w+")
            state_out = scratch / f"{name}.json"
            command = [
                sys.executable, "-m", "bench.peers.service", *args,
                "--service", service, "--replica", str(replica), "--state-out", str(state_out),
            ]  # fmt: skip
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            member = ServiceProcess(service, replica, process, state_out, stderr)
            threading.Thread(target=member.watch_stdout, daemon=True).start()
            self.members.append(member)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until every process printed ``ready``; raise if one died or the time is up."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            while not member.ready.wait(0.2):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{member.service}-{member.replica} not ready in {timeout} s"
                    )

    def check_alive(self) -> None:
        """Raise with the process's error when a service process has ended."""
        for member in self.members:
            code = member.process.poll()
            if code is not None:
                error = self._read(member).get("error")
                raise RuntimeError(
                    f"{member.service}-{member.replica} exited ({code}): {error} "
                    + " | ".join(member.stderr_tail(6))
                )

    def start_meters(self) -> None:
        """Start metering the CPU time of every process (each reports its own)."""
        for member in self.members:
            member.ask_cpu()
        for member in self.members:
            member.cpu_start = member.cpu_seconds()
            member.rdk_start = member.rdk_reading

    def stop_meters(self) -> None:
        """Note every process's CPU seconds since :meth:`start_meters` and its peak RSS."""
        for member in self.members:
            member.ask_cpu()
        for member in self.members:
            if member.cpu_start is not None:
                member.cpu_s = member.cpu_seconds() - member.cpu_start
            if member.rdk_start is not None and member.rdk_reading is not None:
                member.rdk_cpu_s = member.rdk_reading - member.rdk_start
            member.peak_rss_mb = peak_rss_mb(member.process.pid)

    def stop(self) -> list[dict[str, Any]]:
        """Close every process's stdin, wait for them to exit, return what each reported."""
        for member in self.members:
            with contextlib.suppress(OSError):
                if member.process.stdin is not None:
                    member.process.stdin.close()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for member in self.members:
            try:
                member.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()
                member.report["error"] = "did not stop in time (killed)"
            member.report = {**self._read(member), **member.report}
        return [m.report for m in self.members]

    def kill(self) -> None:
        """Kill every process still running (after a failed run); remove the scratch files."""
        for member in self.members:
            if member.process.poll() is None:
                member.process.kill()
                member.process.wait()
            member.stderr.close()
        self._scratch.cleanup()

    @staticmethod
    def _read(member: ServiceProcess) -> dict[str, Any]:
        try:
            report: dict[str, Any] = json.loads(member.state_out.read_text())
        except (OSError, ValueError):
            return {"error": "no report", "stderr_tail": member.stderr_tail()}
        return report
