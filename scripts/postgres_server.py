#!/usr/bin/env python3
"""Start and stop a real, throwaway PostgreSQL server for choreo's tests and benchmarks.

Stdlib only. Used two ways:

* ``python scripts/postgres_server.py run [--port 5432]`` runs a server in the foreground,
  prints its URL and stops it on Ctrl-C or SIGTERM.
* ``PostgresServer`` (a context manager) from Python: tests (``tests/conftest.py``) and
  benchmarks import this file as a module.

The server is the machine's own PostgreSQL (``/usr/lib/postgresql/<version>/bin``, the
newest version found, or ``$CHOREO_PG_BIN``). When no binaries are found and the process
runs as root on Debian, ``apt-get install -y postgresql`` installs them first. The cluster
is created by ``initdb`` in a fresh temporary directory (trust authentication, user
``postgres``, database ``choreo``), listens on 127.0.0.1 on a free port and on a unix socket
in that directory, and is removed on stop. PostgreSQL refuses to run as root, so as root
the server runs as the unprivileged ``postgres`` user (or ``nobody``) through ``setpriv``.

The postmaster is stopped by its own PID (SIGINT: fast shutdown, then SIGKILL after a grace
period), at interpreter exit through :mod:`atexit`, and by the kernel
(``PR_SET_PDEATHSIG``) if the Python process that started it dies, even by SIGKILL.
Nothing is ever killed by name. ``fsync`` stays on: a test server has the durability of a
real one.
"""

from __future__ import annotations

import argparse
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
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["PostgresError", "PostgresServer", "find_binaries", "free_port", "main"]

logger = logging.getLogger("choreo.postgres_server")

PG_ROOT = Path("/usr/lib/postgresql")
USER = "postgres"
DATABASE = "choreo"
STOP_GRACE_SECONDS = 20.0
DEFAULT_PORT = 5432
_PR_SET_PDEATHSIG = 1


class PostgresError(RuntimeError):
    """PostgreSQL's binaries could not be found or installed, or the server did not start."""


# --------------------------------------------------------------------------- binaries


def _newest_bin_dir() -> Path | None:
    """Return the ``bin`` directory of the newest PostgreSQL under /usr/lib/postgresql."""
    override = os.environ.get("CHOREO_PG_BIN")
    if override:
        path = Path(override).expanduser()
        return path if (path / "initdb").is_file() else None
    if not PG_ROOT.is_dir():
        return None
    found = [
        path / "bin"
        for path in PG_ROOT.iterdir()
        if path.name.isdigit() and (path / "bin" / "initdb").is_file()
    ]
    return max(found, key=lambda bin_dir: int(bin_dir.parent.name)) if found else None


def _apt_install() -> None:
    """Install Debian's ``postgresql`` package (root only); raise PostgresError otherwise."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresError(
            f"no PostgreSQL binaries under {PG_ROOT}: install them (apt-get install "
            "postgresql), set CHOREO_PG_BIN to a bin directory holding initdb, or set "
            "CHOREO_POSTGRES_URL to a running server"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    commands = (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"])
    for command in commands:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(
                f"{' '.join(command)} failed (exit {result.returncode}):\n{result.stderr[-2000:]}"
            )


def find_binaries(*, install: bool = True) -> Path:
    """Return the directory of ``initdb`` and ``pg_ctl``, installing PostgreSQL when allowed."""
    bin_dir = _newest_bin_dir()
    if bin_dir is None and install:
        _apt_install()
        bin_dir = _newest_bin_dir()
    if bin_dir is None:
        raise PostgresError(f"no PostgreSQL binaries (initdb) under {PG_ROOT}")
    return bin_dir


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """Return the unprivileged account to run the server as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in (USER, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root and neither 'postgres' nor 'nobody' exists")


def _preexec(
    account: pwd.struct_passwd | None, *, die_with_parent: bool
) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that drops to ``account`` and ties the child to its parent."""
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


def _tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of ``path``, or a note that it is missing or empty."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:]) if text.strip() else f"({path} is empty)"


# --------------------------------------------------------------------------- server

_LIVE: set[PostgresServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    """Stop every server this process started and has not stopped (registered with atexit)."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory, started and stopped by PID.

    ``port=0`` (the default) picks a free port. After :meth:`start` returns, :attr:`url`
    (``postgresql://postgres@127.0.0.1:PORT/choreo``) accepts connections and
    :attr:`startup_seconds` is the wall time of initdb + start + readiness.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        startup_timeout: float = 60.0,
        keep_dir: bool = False,
        install: bool = True,
    ) -> None:
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.keep_dir = keep_dir
        self.install = install
        self.port = 0
        self.startup_seconds: float | None = None
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- public API

    @property
    def url(self) -> str:
        """Return the server's URL over TCP (raises if it was never started)."""
        if not self.port:
            raise PostgresError("the server is not started")
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def data_dir(self) -> Path:
        """Return the cluster's data directory."""
        if self.workdir is None:
            raise PostgresError("the server is not started")
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        """Return the path of the server's log."""
        if self.workdir is None:
            raise PostgresError("the server is not started")
        return self.workdir / "postgres.log"

    def start(self) -> Self:
        """Run initdb into a fresh directory, start the postmaster, wait until it serves.

        With an automatic port a start that lost its port to another process is retried
        with a new one (up to three tries). Raises :class:`PostgresError` (with the tail of
        the log) on failure or after ``startup_timeout`` seconds; nothing is left running.
        """
        if self.process is not None:
            raise PostgresError("the server is already started")
        bin_dir = find_binaries(install=self.install)
        account = _server_user()
        started = time.monotonic()
        tries = 3 if self.requested_port == 0 else 1
        for attempt in range(1, tries + 1):
            self.port = self.requested_port or free_port()
            self.workdir = Path(tempfile.mkdtemp(prefix="choreo-pg-"))
            try:
                if account is not None:
                    os.chown(self.workdir, account.pw_uid, account.pw_gid)
                self._initdb(bin_dir, account)
                self._launch(bin_dir, account)
                self._wait_ready(bin_dir, started)
                self._create_database(bin_dir, account)
            except PostgresError as error:
                port_lost = "already in use" in _tail(self.log_file, 50)
                self.stop()
                if not (port_lost and attempt < tries):
                    raise
                logger.warning("postgres port was taken (%s); retrying on another", error)
                continue
            except BaseException:
                self.stop()
                raise
            break
        self.startup_seconds = time.monotonic() - started
        logger.info("postgres at 127.0.0.1:%d started in %.1f s", self.port, self.startup_seconds)
        return self

    def stop(self) -> None:
        """Stop the postmaster by its PID (fast shutdown, SIGKILL after 20 s); remove the dir.

        Idempotent; safe to call after a failed start.
        """
        process, self.process = self.process, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("postgres pid %d ignored SIGINT; sending SIGKILL", process.pid)
                process.kill()
                process.wait()
        if self.workdir is not None and not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def is_running(self) -> bool:
        """Return whether the postmaster is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """Return the postmaster's process id while it runs, else None."""
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

    # -- steps

    def _run(self, command: list[str], account: pwd.struct_passwd | None) -> None:
        """Run a PostgreSQL tool to completion as ``account``; raise PostgresError on failure."""
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=self.workdir,
            preexec_fn=_preexec(account, die_with_parent=False),
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{Path(command[0]).name} failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _initdb(self, bin_dir: Path, account: pwd.struct_passwd | None) -> None:
        """Create the cluster: trust authentication, superuser ``postgres``, UTF-8."""
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ],
            account,
        )

    def _launch(self, bin_dir: Path, account: pwd.struct_passwd | None) -> None:
        """Start ``postgres`` in its own session, its output going to ``postgres.log``."""
        assert self.workdir is not None
        command = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.workdir}",
            "-c",
            "max_connections=200",
        ]
        with self.log_file.open("wb") as log:
            if account is not None:
                os.chown(self.log_file, account.pw_uid, account.pw_gid)
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_preexec(account, die_with_parent=True),  # noqa: PLW1509
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        logger.info("postgres pid %d starting in %s", self.process.pid, self.workdir)

    def _wait_ready(self, bin_dir: Path, started: float) -> None:
        """Poll ``pg_isready`` until the server accepts connections; raise on timeout."""
        deadline = started + self.startup_timeout
        probe = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise PostgresError(
                    f"postgres exited with code {code} during start-up:\n{_tail(self.log_file)}"
                )
            if subprocess.run(probe, check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(
            f"postgres did not accept connections within {self.startup_timeout:.0f} s:\n"
            + _tail(self.log_file)
        )

    def _create_database(self, bin_dir: Path, account: pwd.struct_passwd | None) -> None:
        """Create the ``choreo`` database."""
        self._run(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                DATABASE,
            ],
            account,
        )


# --------------------------------------------------------------------------- CLI


def _cmd_run(args: argparse.Namespace) -> int:
    """Run a server in the foreground until Ctrl-C or SIGTERM."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server = PostgresServer(port=args.port, startup_timeout=args.timeout, keep_dir=args.keep_dir)
    try:
        server.start()
        print(
            f"postgres ready: {server.url} (pid {server.pid}, "
            f"started in {server.startup_seconds:.1f} s, dir {server.workdir})",
            flush=True,
        )
        print("Ctrl-C stops it.", flush=True)
        while server.is_running():
            time.sleep(0.5)
        print(f"postgres exited by itself; log tail:\n{_tail(server.log_file)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping postgres ...", flush=True)
        return 0
    except PostgresError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the ``run`` command line and return its exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a server in the foreground (Ctrl-C stops it)")
    run.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port; 0 = a free one")
    run.add_argument("--timeout", type=float, default=60.0, help="start-up timeout in seconds")
    run.add_argument("--keep-dir", action="store_true", help="keep the temp dir after stopping")
    run.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
