"""``choreo --help`` and ``choreo --version``, in-process and through the installed script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from choreo._version import __version__
from choreo.cli import COMMANDS, main


def console_script() -> str:
    """Return the path of the installed ``choreo`` console script, failing if there is none."""
    beside_python = Path(sys.executable).with_name("choreo")
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("choreo")
    if found is None:
        pytest.fail("the 'choreo' console script is not installed (pip install -e .)")
    return found


def run_choreo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``choreo`` script with ``args`` and return the finished process."""
    return subprocess.run(
        [console_script(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_help_lists_every_command_in_process() -> None:
    """``choreo --help`` exits 0 and names every registered command."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "choreographed sagas over Apache Kafka" in result.output
    for name in COMMANDS:
        assert name in result.output


def test_version_in_process() -> None:
    """``choreo --version`` prints the version from choreo._version."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"choreo, version {__version__}"


def test_help_via_console_script() -> None:
    """The installed ``choreo`` script answers ``--help`` with the command list."""
    done = run_choreo("--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: choreo" in done.stdout
    assert "demo" in done.stdout


def test_version_via_console_script() -> None:
    """The installed ``choreo`` script prints the package version for ``--version``."""
    done = run_choreo("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"choreo, version {__version__}"


def test_unknown_command_fails_via_console_script() -> None:
    """An unknown subcommand exits with click's usage error status 2."""
    done = run_choreo("no-such-command")
    assert done.returncode == 2
    assert "No such command" in done.stderr


LOGGING_COMMAND = """
import logging
import click
from choreo.cli import COMMANDS, main

@click.command()
def log_once() -> None:
    logging.getLogger("choreo.test").warning("a log line for stderr")
    click.echo("command output")

COMMANDS["log-once"] = ("__main__", "log_once")
main(["--log-level", "INFO", "log-once"])
"""


def test_log_lines_go_to_stderr_and_output_to_stdout() -> None:
    """``--log-level`` log lines are written to stderr, leaving stdout to the command."""
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_COMMAND],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "command output\n"
    assert "a log line for stderr" in done.stderr
