"""The five example services as ``choreo run`` OS processes, several replicas each.

Every replica has a static instance id (``<service>-<index>``) and runs in the same
consumer group as its siblings. The fleet acts as a supervisor would (Kubernetes, systemd):
a replica that exits on its own is recorded (:attr:`Fleet.exits`) and restarted by
:meth:`Fleet.supervise`, unless the scenario retired it. Processes die with the harness
(``PR_SET_PDEATHSIG``) and are only ever signalled by their own PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SERVICES = ("order", "inventory", "payment", "shipping", "notification")
_PR_SET_PDEATHSIG = 1


def console_script() -> str:
    """Return the ``choreo`` console script beside this Python, or the one on PATH."""
    beside = Path(sys.executable).with_name("choreo")
    if beside.is_file():
        return str(beside)
    found = shutil.which("choreo")
    if found is None:
        raise RuntimeError("the 'choreo' console script is not installed (pip install -e .)")
    return found


def service_store_url(url: str, service: str) -> str:
    """Return ``url`` with the schema of ``service`` (``svc_<service>``): a database each."""
    return f"{url}{'&' if '?' in url else '?'}schema=svc_{service}"


def die_with_parent() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that SIGKILLs the child when the forking thread dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass(slots=True)
class Replica:
    """One replica of a service: its process, its log files and how often it started."""

    service: str
    index: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    retired: bool = False
    """Lost for good (or drained on purpose): the supervisor leaves it down."""
    paused: bool = False
    told: bool = False
    """The harness signalled the current process to end: its exit is no finding."""
    log: IO[bytes] | None = None

    @property
    def name(self) -> str:
        """Return the replica's static instance id, ``<service>-<index>``."""
        return f"{self.service}-{self.index}"

    def alive(self) -> bool:
        """Return whether the replica's process runs (a paused one counts as running)."""
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True, slots=True)
class Exit:
    """A replica that exited without being told to: its name, exit code and log tail."""

    replica: str
    code: int
    at_s: float
    tail: str


@dataclass(slots=True)
class FleetSpec:
    """What every replica is started with (the scenario's topic prefix, store, mode)."""

    bootstrap: Callable[[], str]
    schemas: Path
    workdir: Path
    prefix: str
    env: Mapping[str, str]
    store_url: str | None = None
    exactly_once: bool = False
    extra_args: tuple[str, ...] = ()
    log_level: str = "WARNING"
    """The replicas' ``choreo --log-level`` (DEBUG also shows librdkafka's ``debug`` lines)."""
    cwd: Path = field(default_factory=Path.cwd)


class Fleet:
    """The replicas of the five services of one scenario run."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.replicas: dict[str, Replica] = {}
        self.exits: list[Exit] = []
        self.signals: list[tuple[float, str, str]] = []
        self.started_at = time.monotonic()

    # --- commands -----------------------------------------------------------------

    def command(self, replica: Replica) -> list[str]:
        """Return the ``choreo run`` command line of ``replica``."""
        spec = self.spec
        command = [
            console_script(),
            "--log-level",
            spec.log_level,
            "run",
            f"services.{replica.service}:service",
            "--transport",
            "confluent",
            "--bootstrap",
            spec.bootstrap(),
            "--schemas",
            str(spec.schemas),
            "--group",
            f"{spec.prefix}{replica.service}",
            "--topic-prefix",
            spec.prefix,
            "--instance-id",
            replica.name,
        ]
        if spec.store_url:
            command += ["--store", service_store_url(spec.store_url, replica.service)]
        else:  # no shared store: every replica has its own SQLite file (state is split)
            command += ["--inbox", str(spec.workdir / f"{replica.name}.sqlite3")]
        if spec.exactly_once:
            command.append("--exactly-once")
        return command + list(spec.extra_args)

    # --- lifecycle ----------------------------------------------------------------

    def add(self, service: str) -> Replica:
        """Create and start a new replica of ``service`` (the next free index)."""
        index = sum(1 for r in self.replicas.values() if r.service == service)
        replica = Replica(service, index)
        self.replicas[replica.name] = replica
        self.start(replica)
        return replica

    def start(self, replica: Replica) -> None:
        """Start ``replica``'s process; its output goes to ``<name>.<start>.log``."""
        if replica.alive():
            raise RuntimeError(f"{replica.name} is running already")
        if replica.log is not None:
            replica.log.close()
        replica.starts += 1
        replica.paused = replica.told = False
        log_path = self.spec.workdir / f"{replica.name}.{replica.starts}.log"
        replica.log = log_path.open("wb")
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        replica.process = subprocess.Popen(
            self.command(replica),
            stdout=replica.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.spec.cwd,
            env=env,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only calls prctl
        )

    def signal(self, replica: Replica, signum: signal.Signals) -> None:
        """Send ``signum`` to ``replica``'s process (by PID) and note it."""
        if replica.process is None or replica.process.poll() is not None:
            raise RuntimeError(f"{replica.name} is not running")
        self.signals.append((self.elapsed(), replica.name, signum.name))
        if signum in (signal.SIGKILL, signal.SIGTERM):
            replica.told = True
        replica.process.send_signal(signum)

    def kill(self, replica: Replica) -> None:
        """SIGKILL ``replica`` and reap it."""
        if replica.paused:
            self.resume(replica)
        self.signal(replica, signal.SIGKILL)
        assert replica.process is not None
        replica.process.wait(30)

    def terminate(self, replica: Replica, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM ``replica`` and wait; return (exit code or None on timeout, seconds)."""
        started = time.monotonic()
        self.signal(replica, signal.SIGTERM)
        assert replica.process is not None
        try:
            code: int | None = replica.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def pause(self, replica: Replica) -> None:
        """SIGSTOP ``replica``: it keeps its sockets but neither polls nor heartbeats."""
        self.signal(replica, signal.SIGSTOP)
        replica.paused = True

    def resume(self, replica: Replica) -> None:
        """SIGCONT a paused ``replica``."""
        self.signal(replica, signal.SIGCONT)
        replica.paused = False

    def supervise(self) -> None:
        """Record and restart every replica that exited on its own (retired ones stay down)."""
        for replica in self.replicas.values():
            process = replica.process
            if process is None or replica.retired or replica.told or process.poll() is None:
                continue
            self.exits.append(
                Exit(replica.name, int(process.returncode), self.elapsed(), self.tail(replica))
            )
            self.start(replica)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every running replica, SIGKILL those still alive after ``timeout``."""
        running = [r for r in self.replicas.values() if r.alive()]
        for replica in running:
            if replica.paused:
                with contextlib.suppress(ProcessLookupError):
                    self.resume(replica)
            with contextlib.suppress(ProcessLookupError):
                assert replica.process is not None
                replica.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for replica in running:
            assert replica.process is not None
            try:
                replica.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(10)
        for replica in self.replicas.values():
            if replica.log is not None:
                replica.log.close()

    # --- views --------------------------------------------------------------------

    def of(self, service: str, *, alive: bool = True) -> list[Replica]:
        """Return ``service``'s replicas (only the running, unpaused ones by default)."""
        found = [r for r in self.replicas.values() if r.service == service]
        return [r for r in found if r.alive() and not r.paused] if alive else found

    def running(self) -> list[Replica]:
        """Return every running, unpaused replica."""
        return [r for r in self.replicas.values() if r.alive() and not r.paused]

    def elapsed(self) -> float:
        """Return the seconds since the fleet was created."""
        return round(time.monotonic() - self.started_at, 2)

    def tail(self, replica: Replica, chars: int = 2_000) -> str:
        """Return the end of ``replica``'s current log."""
        path = self.spec.workdir / f"{replica.name}.{replica.starts}.log"
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def logs(self) -> list[Path]:
        """Return every replica log file of this run."""
        return sorted(self.spec.workdir.glob("*-*.*.log"))
