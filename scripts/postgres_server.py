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
import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar, Self

SCRIPTS_DIR = Path(__file__).resolve().parent
if str(SCRIPTS_DIR) not in sys.path:  # imported by path from tests and benchmarks
    sys.path.append(str(SCRIPTS_DIR))

from _server_process import (  # noqa: E402 - found through the path set just above
    ServerProcess,
    child_preexec,
    free_port,
    run_foreground,
    tail,
)

__all__ = ["PostgresError", "PostgresServer", "find_binaries", "free_port", "main"]

logger = logging.getLogger("choreo.postgres_server")

PG_ROOT = Path("/usr/lib/postgresql")
USER = "postgres"
DATABASE = "choreo"
DEFAULT_PORT = 5432


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


def _server_user() -> pwd.struct_passwd | None:
    """Return the unprivileged account to run the server as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in (USER, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root and neither 'postgres' nor 'nobody' exists")


# --------------------------------------------------------------------------- server


class PostgresServer(ServerProcess):
    """A throwaway PostgreSQL cluster in a temporary directory, started and stopped by PID.

    ``port=0`` (the default) picks a free port. After :meth:`start` returns, :attr:`url`
    (``postgresql://postgres@127.0.0.1:PORT/choreo``) accepts connections and
    :attr:`startup_seconds` is the wall time of initdb + start + readiness. :meth:`stop`
    sends SIGINT (PostgreSQL's fast shutdown), SIGKILL after 20 s, and removes the dir.
    """

    kind: ClassVar[str] = "postgres"
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT  # PostgreSQL's "fast" shutdown
    error: ClassVar[type[Exception]] = PostgresError

    def __init__(
        self,
        *,
        port: int = 0,
        startup_timeout: float = 60.0,
        keep_dir: bool = False,
        install: bool = True,
    ) -> None:
        super().__init__(keep_dir=keep_dir)
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.install = install
        self.port = 0
        self.startup_seconds: float | None = None

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
        return self.in_workdir("data")

    @property
    def log_file(self) -> Path:
        """Return the path of the server's log."""
        return self.in_workdir("postgres.log")

    def logs(self, lines: int = 40) -> str:
        """Return the tail of the server's log, for error messages."""
        return tail(self.log_file, lines)

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

        def attempt() -> None:
            self.port = self.requested_port or free_port()
            self.workdir = Path(tempfile.mkdtemp(prefix="choreo-pg-"))
            if account is not None:
                os.chown(self.workdir, account.pw_uid, account.pw_gid)
            self._initdb(bin_dir, account)
            self._launch(bin_dir, account)
            self._wait_ready(bin_dir, started)
            self._create_database(bin_dir, account)

        self.retry_lost_port(attempt, tries=3 if self.requested_port == 0 else 1)
        self.startup_seconds = time.monotonic() - started
        logger.info("postgres at 127.0.0.1:%d started in %.1f s", self.port, self.startup_seconds)
        return self

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
            preexec_fn=child_preexec(account, die_with_parent=False),
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
        self.spawn(
            command,
            self.log_file,
            preexec=child_preexec(account, die_with_parent=True),
            owner=account,
        )

    def _wait_ready(self, bin_dir: Path, started: float) -> None:
        """Poll ``pg_isready`` until the server accepts connections; raise on timeout."""
        deadline = started + self.startup_timeout
        probe = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise PostgresError(
                    f"postgres exited with code {code} during start-up:\n{self.logs()}"
                )
            if subprocess.run(probe, check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(
            f"postgres did not accept connections within {self.startup_timeout:.0f} s:\n"
            + self.logs()
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
    server = PostgresServer(port=args.port, startup_timeout=args.timeout, keep_dir=args.keep_dir)
    return run_foreground(
        server,
        lambda: [
            f"postgres ready: {server.url} (pid {server.pid}, "
            f"started in {server.startup_seconds:.1f} s, dir {server.workdir})"
        ],
    )


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
