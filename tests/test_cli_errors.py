"""Every error of the command line says how to fix it (and never shows a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from choreo.cli import main
from choreo.errors import ConfigurationError
from choreo.tracker.sources import write_container_file
from choreo.transports.factory import open_transport

REPO = Path(__file__).resolve().parent.parent
ENV = {
    "COLUMNS": "200",
    "CHOREO_KAFKA_BOOTSTRAP": "",
    "CHOREO_KAFKA_CONFIG": "",
    "CHOREO_KAFKA_BOOTSTRAP_SERVERS": "",
}


@pytest.fixture
def log_file(tmp_path: Path) -> str:
    """Return an empty exported log."""
    path = tmp_path / "empty.avro"
    write_container_file(path, [])
    return str(path)


CASES = [
    # (arguments, exit code, what the message must name)
    (["sagas"], 2, ["--file PATH", "--bootstrap HOST:PORT", "$CHOREO_KAFKA_BOOTSTRAP"]),
    (["verify"], 2, ["--file PATH", "$CHOREO_KAFKA_BOOTSTRAP"]),
    (["ui"], 2, ["--file PATH", "--bootstrap HOST:PORT", "$CHOREO_KAFKA_BOOTSTRAP"]),
    (["export", "-o", "{tmp}/x.avro"], 2, ["--bootstrap HOST:PORT", "$CHOREO_KAFKA_BOOTSTRAP"]),
    (
        ["run", "services.inventory:service", "--schemas", "schemas"],
        1,
        ["--bootstrap HOST:PORT", "$CHOREO_KAFKA_BOOTSTRAP"],
    ),
    (["run", "no_such_pkg.mod:svc", "--schemas", "schemas"], 2, ["project's root", "PYTHONPATH"]),
    (["run", "services.inventory:nothing", "--schemas", "schemas"], 2, ["name the Service"]),
    (["run", "services.inventory", "--schemas", "schemas"], 2, ["MODULE:SERVICE, e.g."]),
    (
        ["run", "services.inventory:service", "--schemas", "schemas", "--transport", "memory",
         "--store", "sqlite:///{tmp}/a.db", "--inbox", "{tmp}/b.db"],
        2,
        ["--inbox PATH is --store sqlite:///PATH"],
    ),
    (["sagas", "--file", "{log}", "--topics", "("], 2, ["regular expression such as"]),
    (["sagas", "--file", "{log}", "--since", "yesterday"], 2, ["duration ago", "ISO 8601"]),
    (["sagas", "--file", "{log}", "--where", "email"], 2, ["write e.g. order_id=123"]),
    (["sagas", "--file", "{log}", "--bootstrap", "h:1"], 2, ["not both"]),
    (["check", "no_such_module_xyz"], 2, ["project's root", "file path"]),
    (["check", "{tmp}/missing.py"], 2, ["give an existing .py file"]),
    (["schemas", "codegen", "schemas", "--check"], 2, ["-o FILE", "choreo schemas codegen"]),
    (["schemas", "show", "schemas", "no.such.Schema"], 2, ["lists the schemas"]),
    (["asyncapi", "services", "--topic-naming", "nocolon"], 2, ["e.g. myapp.topics:topic_of"]),
]


@pytest.mark.parametrize(("args", "code", "hints"), CASES, ids=lambda v: str(v)[:60])
def test_error_says_how_to_fix_it(
    *,
    args: list[str],
    code: int,
    hints: list[str],
    log_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command fails with its exit code and a message naming the fix; no traceback."""
    monkeypatch.chdir(REPO)
    filled = [a.replace("{tmp}", str(tmp_path)).replace("{log}", log_file) for a in args]
    result = CliRunner().invoke(main, filled, env=ENV)
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    text = " ".join(result.output.split())
    for hint in hints:
        assert hint in text, text
    assert "Traceback" not in result.output


def test_the_library_error_for_a_missing_address_names_every_way_to_give_one() -> None:
    """open_transport of a Kafka kind without an address says how to give one."""
    with pytest.raises(ConfigurationError) as caught:
        open_transport("confluent")
    message = str(caught.value)
    for hint in ("bootstrap='host:port'", "--bootstrap HOST:PORT", "$CHOREO_KAFKA_BOOTSTRAP"):
        assert hint in message
