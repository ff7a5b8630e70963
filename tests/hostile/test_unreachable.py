"""Every command that talks to Kafka ends with a clear error for a broker that is not there.

No traceback, no wait for a client's timeouts: the message names the address, why it
failed and what to check.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from choreo.cli import main
from choreo.tracker.sources import write_container_file

DEAD = "127.0.0.1:1"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def commands(tmp_path: Path) -> list[list[str]]:
    """Return each Kafka command pointed at the dead address."""
    exported = tmp_path / "empty.avro"
    write_container_file(exported, [])
    return [
        ["demo", "--no-ui", "--orders", "1", "--bootstrap", DEAD],
        ["sagas", "--bootstrap", DEAD],
        ["trace", "some-id", "--bootstrap", DEAD],
        ["watch", "--bootstrap", DEAD, "--duration", "1"],
        ["verify", "--bootstrap", DEAD, "--transport", "kafka-python"],
        ["export", "-o", str(tmp_path / "out.avro"), "--bootstrap", DEAD],
        ["import", str(exported), "--bootstrap", DEAD],
        ["ui", "--bootstrap", DEAD, "--port", "0"],
        ["run", "services.inventory:service", "--schemas", str(SCHEMAS), "--bootstrap", DEAD],
    ]


@pytest.mark.parametrize("index", range(9))
def test_unreachable_broker_is_a_clear_error(tmp_path: Path, index: int) -> None:
    """The command exits 1 within seconds, naming the address and the fix."""
    args = commands(tmp_path)[index]
    started = time.monotonic()
    result = CliRunner().invoke(main, args)
    assert time.monotonic() - started < 20, args
    assert result.exit_code == 1, (args, result.output)
    assert "Traceback" not in result.output
    assert f"cannot reach Kafka ({DEAD}: Connection refused)" in result.output, result.output
    assert "check --bootstrap" in result.output


def test_unknown_host_and_malformed_address(tmp_path: Path) -> None:
    """An unknown host and an address without a port are explained too."""
    result = CliRunner().invoke(main, ["sagas", "--bootstrap", "no-such-host.invalid:9092"])
    assert result.exit_code == 1 and "unknown host" in result.output
    result = CliRunner().invoke(main, ["sagas", "--bootstrap", "just-a-host"])
    assert result.exit_code == 1 and "is not HOST:PORT" in result.output
