"""Tests of generating typed event classes from schemas."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from click.testing import CliRunner

from choreo.avro import load_directory
from choreo.avro.classes import check_event_class
from choreo.avro.codegen import HEADER, generate_module
from choreo.cli.schemas_cmd import schemas
from choreo.model.events import Event

REPO = Path(__file__).resolve().parent.parent


def import_file(path: Path) -> ModuleType:
    """Import a generated module from a file under a unique name."""
    name = f"generated_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_services_events_is_up_to_date() -> None:
    """services/events.py is exactly what codegen writes from schemas/."""
    result = CliRunner().invoke(
        schemas, ["codegen", "schemas/", "-o", str(REPO / "services" / "events.py"), "--check"]
    )
    assert result.exit_code == 0, result.output


def test_generated_module_shape() -> None:
    """The module starts with the header and defines frozen, slotted, keyword-only events."""
    from services import events

    source = (REPO / "services" / "events.py").read_text()
    assert source.startswith(HEADER + "\n")
    created = events.OrderCreated
    params = created.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and "__slots__" in vars(created)
    assert all(f.kw_only for f in dataclasses.fields(created))
    assert created.__avro_name__ == "shop.orders.OrderCreated"
    assert issubclass(created, Event)
    coupon = next(f for f in dataclasses.fields(created) if f.name == "coupon_code")
    assert coupon.default is None and coupon.type == "str | None"
    assert next(f for f in dataclasses.fields(created) if f.name == "items").type == (
        "Sequence[LineItem]"
    )
    assert [m.value for m in events.Channel] == ["EMAIL", "SMS", "PUSH"]
    assert "choreo.SagaTimedOut" not in source  # choreo ships that class itself


def test_generated_module_is_lint_and_type_clean() -> None:
    """ruff and mypy accept the generated module."""
    path = str(REPO / "services" / "events.py")
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", path],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert ruff.returncode == 0, ruff.stdout
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", path],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert mypy.returncode == 0, mypy.stdout


def write(root: Path, relative: str, schema: Any) -> None:
    """Write a schema file."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))


def test_codegen_handles_keywords_defaults_maps_and_name_collisions(tmp_path: Path) -> None:
    """Keyword field names, defaults, maps, enums and clashing simple names all generate."""
    write(
        tmp_path,
        "a/Thing.v1.avsc",
        {
            "type": "record",
            "name": "Thing",
            "namespace": "t.a",
            "doc": "A thing.",
            "fields": [
                {"name": "class", "type": "string"},
                {"name": "count", "type": "int", "default": 3},
                {"name": "ratio", "type": "double", "default": 1},
                {"name": "labels", "type": {"type": "map", "values": "string"}, "default": {}},
                {
                    "name": "mode",
                    "type": {"type": "enum", "name": "Mode", "symbols": ["ON", "OFF"]},
                    "default": "OFF",
                },
                {"name": "raw", "type": {"type": "fixed", "name": "Raw", "size": 2}},
            ],
        },
    )
    write(
        tmp_path,
        "b/Thing.v1.avsc",
        {
            "type": "record",
            "name": "Thing",
            "namespace": "t.b",
            "fields": [{"name": "x", "type": "long"}],
        },
    )
    registry = load_directory(tmp_path)
    source = generate_module(registry, source_label="tmp/")
    out = tmp_path / "generated.py"
    out.write_text(source)
    module = import_file(out)
    thing_a, thing_b = module.AThing, module.BThing
    made = thing_a(class_="c", raw=b"xy")
    assert (made.count, made.ratio, made.labels, made.mode) == (3, 1.0, {}, module.Mode.OFF)
    assert thing_b(x=1).__avro_name__ == "t.b.Thing"
    for cls in (thing_a, thing_b):
        check_event_class(cls, registry)


def test_codegen_cli_writes_stdout_without_output() -> None:
    """Without -o the module goes to standard output."""
    result = CliRunner().invoke(schemas, ["codegen", str(REPO / "schemas")])
    assert result.exit_code == 0
    assert result.output.startswith(HEADER)


def test_codegen_check_detects_stale_files(tmp_path: Path) -> None:
    """--check exits 1 when the file differs from what codegen would write."""
    stale = tmp_path / "events.py"
    stale.write_text("# old\n")
    result = CliRunner().invoke(
        schemas, ["codegen", str(REPO / "schemas"), "-o", str(stale), "--check"]
    )
    assert result.exit_code == 1 and "out of date" in result.output


def test_show_lists_and_shows_schemas() -> None:
    """`choreo schemas show` lists versions with fingerprints, or prints one schema."""
    runner = CliRunner()
    listing = runner.invoke(schemas, ["show", str(REPO / "schemas")])
    assert listing.exit_code == 0 and "shop.orders.OrderCreated" in listing.output
    one = runner.invoke(
        schemas, ["show", str(REPO / "schemas"), "shop.orders.OrderCreated", "--version", "1"]
    )
    assert one.exit_code == 0
    assert "shop.orders.OrderCreated v1" in one.output and "coupon_code" not in one.output
    missing = runner.invoke(schemas, ["show", str(REPO / "schemas"), "shop.orders.Nope"])
    assert missing.exit_code == 2
