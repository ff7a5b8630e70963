"""One throwaway server process in a temporary directory, started and stopped by its PID.

Stdlib only. The part of ``scripts/kafka_broker.py`` and ``scripts/postgres_server.py``
that is not about Kafka or PostgreSQL: picking a free port, spawning the server in its own
session with its output in a log file, tying it to the Python process that started it
(``PR_SET_PDEATHSIG``: the kernel kills it if that process dies, even by SIGKILL),
stopping it by its own PID (a polite signal, SIGKILL after a grace period) at
:meth:`ServerProcess.stop` and at interpreter exit (:mod:`atexit`), retrying a start whose
port another process took, and the foreground ``run`` command. Nothing is ever killed by
name.

Both scripts import this file as the module ``_server_process``; they add their own
directory to ``sys.path`` first, so it is found however they were loaded (run as a
script, or imported by path from tests and benchmarks).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

__all__ = ["ServerProcess", "Serving", "child_preexec", "free_port", "run_foreground", "tail"]

logger = logging.getLogger("choreo.server_process")

STOP_GRACE_SECONDS = 20.0
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of ``path``, or a note that it is missing or empty."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:]) if text.strip() else f"({path} is empty)"


def child_preexec(
    account: pwd.struct_passwd | None = None, *, die_with_parent: bool = True
) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that drops to ``account`` and ties the child to its parent.

    ``die_with_parent`` asks the kernel (Linux) to SIGKILL the child when its parent dies.
    The kernel ties that to the *thread* that forked, so start a server from a thread that
    lives as long as the server should (the main thread, in pytest). Returns None when
    there is nothing to do.
    """
    libc: Any = None
    if die_with_parent and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if account is None and libc is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the child between fork and exec: drop root first, then ask for
        # PDEATHSIG (a change of credentials clears it, so it must come after).
        if account is not None:
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return preexec


_LIVE: set[ServerProcess] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    """Stop every server this process started and has not stopped (registered with atexit)."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)


class ServerProcess:
    """Base of a server process living in :attr:`workdir`, stopped by its PID.

    A subclass names itself (:attr:`kind`, for logs), its error type (:attr:`error`), the
    signal that asks it to shut down (:attr:`stop_signal`), implements :meth:`start` and
    :meth:`logs`, and launches its process with :meth:`spawn`.
    """

    kind: ClassVar[str] = "server"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    error: ClassVar[type[Exception]] = RuntimeError

    def __init__(self, *, keep_dir: bool = False) -> None:
        self.keep_dir = keep_dir
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def in_workdir(self, name: str) -> Path:
        """Return the path of ``name`` in :attr:`workdir`; raise :attr:`error` before a start."""
        if self.workdir is None:
            raise self.error(f"the {self.kind} is not started")
        return self.workdir / name

    def start(self) -> Self:
        """Start the server and return once it serves (a subclass implements it)."""
        raise NotImplementedError

    def logs(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of each of the server's logs (subclasses say how)."""
        raise NotImplementedError

    def spawn(
        self,
        command: Sequence[str],
        output: Path,
        *,
        append: bool = False,
        preexec: Callable[[], None] | None = None,
        owner: pwd.struct_passwd | None = None,
    ) -> None:
        """Start ``command`` in its own session in :attr:`workdir`, its output going to ``output``.

        ``preexec`` defaults to :func:`child_preexec` (die with the parent); ``owner``, when
        given, gets the log file (a server that drops root must be able to write it).
        """
        assert self.workdir is not None
        with output.open("ab" if append else "wb") as log:
            if owner is not None:
                os.chown(output, owner.pw_uid, owner.pw_gid)
            self.process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=preexec or child_preexec(),  # noqa: PLW1509 - setuid/prctl only
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        logger.info("%s pid %d starting in %s", self.kind, self.process.pid, self.workdir)

    def retry_lost_port(self, attempt: Callable[[], None], *, tries: int) -> None:
        """Run ``attempt`` (one whole start) up to ``tries`` times while its port was taken.

        A failure whose error or logs say "already in use" stops what was started and tries
        again (``attempt`` picks new ports); any other failure, or the last one, stops the
        server and raises.
        """
        for number in range(1, tries + 1):
            try:
                attempt()
            except self.error as error:
                logs = self.logs(200) if self.workdir is not None else ""
                port_lost = "already in use" in f"{error}{logs}"
                self.stop()
                if not (port_lost and number < tries):
                    raise
                logger.warning("%s port was taken (%s); retrying on another", self.kind, error)
                continue
            except BaseException:
                self.stop()
                raise
            return

    def stop(self) -> None:
        """Stop the process by its PID (:attr:`stop_signal`, SIGKILL after 20 s); remove the dir.

        Idempotent; safe to call after a failed start.
        """
        process, self.process = self.process, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s pid %d ignored %s; sending SIGKILL",
                    self.kind,
                    process.pid,
                    self.stop_signal.name,
                )
                process.kill()
                process.wait()
        if self.workdir is not None and not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def is_running(self) -> bool:
        """Return whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """Return the server's process id while it runs, else None."""
        return self.process.pid if self.is_running() and self.process is not None else None

    def __enter__(self) -> Self:
        """Start the server (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server (see :meth:`stop`)."""
        self.stop()


class Serving(Protocol):
    """What :func:`run_foreground` runs: a :class:`ServerProcess`, or several as one."""

    kind: ClassVar[str]
    error: ClassVar[type[Exception]]

    def start(self) -> object:
        """Start serving; raise ``error`` when that fails."""

    def stop(self) -> None:
        """Stop whatever runs; idempotent."""

    def is_running(self) -> bool:
        """Return whether it still serves."""

    def logs(self, lines: int = 40) -> str:
        """Return the tails of its logs."""


def run_foreground(server: Serving, ready: Callable[[], Sequence[str]]) -> int:
    """Start ``server``, print ``ready()``'s lines, serve until Ctrl-C or SIGTERM, stop it.

    Returns the exit status of a ``run`` command: 0 when stopped by the user, 1 when the
    server failed to start or exited by itself (its log tails go to stderr).
    """

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        for line in ready():
            print(line, flush=True)
        print("Ctrl-C stops it.", flush=True)
        while server.is_running():
            time.sleep(0.5)
        print(f"{server.kind} exited by itself; log tail:\n{server.logs()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stopping {server.kind} ...", flush=True)
        return 0
    except server.error as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        server.stop()
