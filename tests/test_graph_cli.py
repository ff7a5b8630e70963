"""Tests of ``choreo check``, ``choreo graph`` and ``choreo asyncapi`` through click's runner."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from choreo.cli import main

VALID = "fixtures.choreographies.valid_order"
WIDE = {"COLUMNS": "240"}  # rich tables must not wrap codes in the captured output


def run(*args: str) -> Result:
    """Run ``choreo ARGS`` in-process and return the result."""
    return CliRunner().invoke(main, list(args), env=WIDE, catch_exceptions=False)


def test_check_valid_choreography_exits_0_with_a_summary() -> None:
    """A consistent choreography prints one ok line with its size."""
    result = run("check", VALID)
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 5 services, 10 handlers, 14 events\n"


def test_check_missing_compensation_exits_1_naming_it() -> None:
    """A broken choreography exits 1 with a table naming code, service and handler."""
    result = run("check", "fixtures.choreographies.broken_missing_compensation")
    assert result.exit_code == 1
    assert "missing-compensation" in result.stdout
    assert "shop.reserve: compensatable step has no compensation" in result.stdout
    assert "1 error, 0 warnings" in result.stderr


def test_check_unhandled_failure_lists_errors_and_warnings() -> None:
    """Errors and warnings appear in one table; errors decide the exit code."""
    result = run("check", "fixtures.choreographies.broken_unhandled_failure")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    error_row = next(i for i, line in enumerate(lines) if "unhandled-failure" in line)
    warning_row = next(i for i, line in enumerate(lines) if "start-not-compensated" in line)
    assert error_row < warning_row
    assert "error" in lines[error_row] and "warning" in lines[warning_row]


def test_check_warnings_alone_pass_unless_strict() -> None:
    """Warnings print but exit 0; ``--strict`` makes them fail."""
    target = "fixtures.choreographies.broken_start_not_compensated"
    result = run("check", target)
    assert result.exit_code == 0, result.output
    assert "start-not-compensated" in result.stdout
    assert "ok: 1 services, 3 handlers, 5 events (1 warning)" in result.stdout
    strict = run("check", "--strict", target)
    assert strict.exit_code == 1


@pytest.mark.parametrize(
    ("module", "code"),
    [
        ("broken_dead_end_event", "dead-end-event"),
        ("broken_never_emitted", "never-emitted"),
        ("broken_retriable_before_pivot", "retriable-before-pivot"),
        ("broken_undoes_other_service", "undoes-other-service"),
    ],
)
def test_check_json_output(module: str, code: str) -> None:
    """``--format json`` prints every problem as an object and still exits 1."""
    result = run("check", "--format", "json", f"fixtures.choreographies.{module}")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert [p["code"] for p in problems] == [code]
    assert problems[0]["severity"] == "error"
    assert problems[0]["message"].startswith(f"{problems[0]['service']}.{problems[0]['handler']}:")


def test_check_json_output_of_a_valid_choreography_is_empty() -> None:
    """A consistent choreography prints an empty JSON list and exits 0."""
    result = run("check", "--format", "json", VALID)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def write_schemas(directory: Path, names: list[str]) -> None:
    """Write a minimal record schema for each full name into ``directory``."""
    for full_name in names:
        namespace, _, name = full_name.rpartition(".")
        schema = {
            "type": "record",
            "name": name,
            "namespace": namespace,
            "doc": f"The {name} event.",
            "fields": [{"name": "order_id", "type": "string", "doc": "The order."}],
        }
        (directory / f"{name}.avsc").write_text(json.dumps(schema))


def shop_event_names() -> list[str]:
    """Return the full names of the valid example's events."""
    from choreo.choreography.discovery import load_choreography

    return list(load_choreography(VALID).event_types)


def test_check_with_schemas_reports_an_event_without_schema(tmp_path: Path) -> None:
    """``--schemas DIR`` adds the missing-schema check."""
    pytest.importorskip("choreo.avro.loader")
    write_schemas(tmp_path, [n for n in shop_event_names() if not n.endswith("Dispatched")])
    result = run("check", VALID, "--schemas", str(tmp_path))
    assert result.exit_code == 1
    assert "missing-schema" in result.stdout
    assert "test.shop.ShipmentDispatched has no schema" in result.stdout


def test_check_unknown_target_exits_2() -> None:
    """A target that cannot be imported is a load error (exit 2), not a problem list."""
    result = run("check", "fixtures.choreographies.does_not_exist")
    assert result.exit_code == 2
    assert "error: cannot import fixtures.choreographies.does_not_exist" in result.stderr


def test_check_imports_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current directory is importable, so a project's modules need no install."""
    name = f"local_choreo_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from fixtures.choreographies.broken_dead_end_event import saga, shop\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    result = run("check", f"{name}:shop")
    assert result.exit_code == 1
    assert "dead-end-event" in result.stdout
    sys.modules.pop(name, None)


FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "choreographies"


def test_check_a_file_path_in_a_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module given as a file path inside a package is imported under its dotted name."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = FIXTURE_DIR / "broken_chain_order.py"
    result = run("check", str(path))
    assert result.exit_code == 1, result.output
    assert "compensation-chain-order" in result.stdout
    assert "choreographies.broken_chain_order" in sys.modules  # fixtures/ has no __init__
    package = run("check", str(FIXTURE_DIR / "valid_order") + "/")
    assert package.exit_code == 0, package.output
    assert package.stdout == "ok: 5 services, 10 handlers, 14 events\n"


def test_check_a_standalone_file_with_an_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``./module.py`` and ``./module.py:attribute`` work from any directory."""
    name = f"standalone_{uuid.uuid4().hex[:8]}"
    source = (FIXTURE_DIR / "broken_chain_order.py").read_text(encoding="utf-8")
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    whole = run("check", f"./{name}.py")
    assert whole.exit_code == 1, whole.output
    assert "compensation-chain-order" in whole.stdout
    one = run("check", "--json", f"./{name}.py:shop")
    assert one.exit_code == 1
    [problem] = json.loads(one.stdout)
    assert problem["code"] == "compensation-chain-order"
    assert problem["chain"].startswith("test.chain_order.ShipFailed -> shop.release")
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = (\n", "SyntaxError"),
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
        ("import no_such_module_anywhere_xyz\n", "cannot import"),
        ("VALUE = 1\n", "no Service or Saga found"),
    ],
)
def test_check_a_file_that_cannot_load_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    """A file that does not import (or holds nothing) is "could not load": exit 2, no traceback."""
    name = f"unloadable_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = run("check", str(tmp_path / f"{name}.py"))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output
    sys.modules.pop(name, None)


def test_check_a_missing_path_exits_2_saying_what_to_give(tmp_path: Path) -> None:
    """A path that does not exist, or a directory that is no package, is a load error."""
    missing = run("check", str(tmp_path / "nope.py"))
    assert missing.exit_code == 2
    assert "no Python file or package at" in missing.stderr
    assert "give an existing .py file" in missing.stderr
    plain = run("check", str(tmp_path) + "/")
    assert plain.exit_code == 2
    assert "directory without __init__.py" in plain.stderr


def test_check_explains_problems_as_paragraphs_at_80_columns() -> None:
    """At 80 columns each problem is a heading line and its message, never a cut table."""
    result = CliRunner().invoke(
        main, ["check", "fixtures.choreographies.broken_chain_order"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "error compensation-chain-order" in lines
    assert all(len(line) <= 80 for line in lines)
    text = " ".join(line.strip() for line in lines)
    assert "shop.release (undoes shop.reserve) -> test.chain_order.Released" in text


def test_check_the_example_services_passes() -> None:
    """The example shop (choreographed and orchestrated sagas together) passes the check."""
    result = run("check", "services")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")


def test_graph_mermaid_to_stdout() -> None:
    """``choreo graph`` prints a Mermaid flowchart by default."""
    result = run("graph", VALID)
    assert result.exit_code == 0
    assert result.stdout.startswith("flowchart LR\n")
    assert 'subgraph svc0["inventory"]' in result.stdout


def test_graph_dot_to_a_file(tmp_path: Path) -> None:
    """``--format dot -o FILE`` writes Graphviz text to the file."""
    out = tmp_path / "shop.dot"
    result = run("graph", VALID, "--format", "dot", "-o", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    text = out.read_text()
    assert text.startswith("digraph choreography {")
    assert text.count(" -> ") == 31


def test_graph_of_a_broken_choreography_still_draws() -> None:
    """Drawing does not check: a broken choreography is drawn as declared."""
    result = run("graph", "fixtures.choreographies.broken_never_emitted")
    assert result.exit_code == 0
    assert "Ghost" in result.stdout


def test_asyncapi_yaml_to_stdout() -> None:
    """``choreo asyncapi`` prints an AsyncAPI 3.0.0 YAML document."""
    result = run("asyncapi", VALID, "--title", "Shop", "--api-version", "2.1.0")
    assert result.exit_code == 0
    document = yaml.safe_load(result.stdout)
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "Shop"
    assert document["info"]["version"] == "2.1.0"
    assert len(document["channels"]) == 14


def test_asyncapi_json_with_schemas_to_a_file(tmp_path: Path) -> None:
    """``--format json -o FILE --schemas DIR`` writes payloads from the schemas."""
    pytest.importorskip("choreo.avro.loader")
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    write_schemas(schemas, shop_event_names())
    out = tmp_path / "asyncapi.json"
    result = run("asyncapi", VALID, "--schemas", str(schemas), "--format", "json", "-o", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    message = document["components"]["messages"]["test.shop.OrderCreated"]
    assert message["payload"]["schemaFormat"] == "application/vnd.apache.avro;version=1.9.0"
    assert message["payload"]["schema"]["fields"][0]["name"] == "order_id"


def test_asyncapi_topic_naming_function() -> None:
    """``--topic-naming MODULE:FUNCTION`` decides the channels."""
    result = run(
        "asyncapi",
        VALID,
        "--format",
        "json",
        "--topic-naming",
        "fixtures.choreographies.targets:one_topic",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document["channels"]) == ["shop.all-events"]


@pytest.mark.parametrize(
    "naming",
    [
        "nocolon",
        "fixtures.choreographies.targets:missing",
        "fixtures.choreographies.targets:SERVICES",
    ],
)
def test_asyncapi_bad_topic_naming_exits_2(naming: str) -> None:
    """A topic naming that is not an importable function is a load error."""
    result = run("asyncapi", VALID, "--topic-naming", naming)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --topic-naming {naming!r}")
