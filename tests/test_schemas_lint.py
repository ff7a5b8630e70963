"""Tests of schema lint: recursion, nesting depth, name clashes and namespaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from choreo.avro import BUILTIN_DIR, lint_files, lint_schema, load_directory, load_files
from choreo.cli.schemas_cmd import schemas
from choreo.errors import SchemaError

REPO = Path(__file__).resolve().parent.parent


def write(root: Path, relative: str, schema: Any) -> Path:
    """Write ``schema`` as JSON to ``root/relative``."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))
    return path


def nested(depth: int) -> dict[str, Any]:
    """Return a record nested ``depth`` records deep."""
    schema: dict[str, Any] = {"type": "record", "name": f"L{depth}", "fields": []}
    for level in range(depth - 1, 0, -1):
        schema = {
            "type": "record",
            "name": f"L{level}",
            "fields": [{"name": "child", "type": schema}],
        }
    schema["namespace"] = "t"
    return schema


def lint_dir(root: Path) -> list[str]:
    """Return the lint issues of a directory as strings."""
    loaded = load_files(sorted(root.rglob("*.avsc")), lint=False)
    return [str(issue) for issue in lint_files(loaded)]


def test_repo_schemas_are_clean() -> None:
    """The example domain and the built-ins pass lint."""
    files = [*sorted(BUILTIN_DIR.glob("*.avsc")), *sorted((REPO / "schemas").rglob("*.avsc"))]
    assert lint_files(load_files(files, lint=False)) == []


def test_recursive_record_is_rejected(tmp_path: Path) -> None:
    """A record containing itself (through a union) is a `recursive` issue."""
    write(
        tmp_path,
        "Node.v1.avsc",
        {
            "type": "record",
            "name": "Node",
            "namespace": "t",
            "fields": [{"name": "next", "type": ["null", "Node"], "default": None}],
        },
    )
    issues = lint_dir(tmp_path)
    assert len(issues) == 1 and "recursive type: t.Node → t.Node [recursive]" in issues[0]
    with pytest.raises(SchemaError, match="recursive"):
        load_directory(tmp_path)


def test_recursion_across_files_is_rejected(tmp_path: Path) -> None:
    """Two files referring to each other form a recursive type."""
    write(
        tmp_path,
        "A.v1.avsc",
        {
            "type": "record",
            "name": "A",
            "namespace": "t",
            "fields": [{"name": "b", "type": ["null", "t.B"]}],
        },
    )
    write(
        tmp_path,
        "B.v1.avsc",
        {
            "type": "record",
            "name": "B",
            "namespace": "t",
            "fields": [{"name": "a", "type": ["null", "t.A"]}],
        },
    )
    assert any("[recursive]" in issue for issue in lint_dir(tmp_path))


def test_depth_limit(tmp_path: Path) -> None:
    """Depth 8 passes, depth 9 fails with the default limit; the limit is configurable."""
    write(tmp_path, "L1.v1.avsc", nested(8))
    assert lint_dir(tmp_path) == []
    write(tmp_path, "L1.v1.avsc", nested(9))
    issues = lint_dir(tmp_path)
    assert issues and "nesting depth 9 exceeds the limit of 8 [depth]" in issues[0]
    assert (
        lint_schema(
            load_directory(tmp_path, lint=False).get("t.L1").schema, source="x", max_depth=9
        )
        == []
    )


def test_arrays_and_maps_count_towards_depth() -> None:
    """Arrays and maps add a level each; unions do not."""
    schema = {
        "type": "record",
        "name": "t.R",
        "fields": [
            {
                "name": "x",
                "type": {"type": "array", "items": {"type": "map", "values": ["null", "int"]}},
            }
        ],
    }
    assert lint_schema(schema, source="s", max_depth=2)[0].rule == "depth"
    assert lint_schema(schema, source="s", max_depth=3) == []


def test_name_clash_between_files(tmp_path: Path) -> None:
    """The same full name defined differently in two files is a `name-clash`."""
    item = {
        "type": "record",
        "name": "Item",
        "namespace": "t",
        "fields": [{"name": "sku", "type": "string"}],
    }
    write(tmp_path, "Item.v1.avsc", item)
    other = dict(item, fields=[{"name": "sku", "type": "long"}])
    write(
        tmp_path,
        "Order.v1.avsc",
        {
            "type": "record",
            "name": "Order",
            "namespace": "t",
            "fields": [{"name": "item", "type": other}],
        },
    )
    issues = lint_dir(tmp_path)
    assert any("`t.Item` is defined differently" in i and "[name-clash]" in i for i in issues)


def test_identical_redefinition_is_not_a_clash(tmp_path: Path) -> None:
    """An identical copy of a named type (docs aside) in another file is fine."""
    item = {
        "type": "record",
        "name": "Item",
        "namespace": "t",
        "fields": [{"name": "sku", "type": "string"}],
    }
    write(tmp_path, "Item.v1.avsc", item)
    write(
        tmp_path,
        "Order.v1.avsc",
        {
            "type": "record",
            "name": "Order",
            "namespace": "t",
            "fields": [{"name": "item", "type": dict(item, doc="x")}],
        },
    )
    assert lint_dir(tmp_path) == []


def test_versions_of_a_type_are_not_clashes(tmp_path: Path) -> None:
    """Different versions of one top-level name differ by design."""
    write(
        tmp_path,
        "Item.v1.avsc",
        {
            "type": "record",
            "name": "Item",
            "namespace": "t",
            "fields": [{"name": "sku", "type": "string"}],
        },
    )
    write(
        tmp_path,
        "Item.v2.avsc",
        {
            "type": "record",
            "name": "Item",
            "namespace": "t",
            "fields": [
                {"name": "sku", "type": "string"},
                {"name": "n", "type": "int", "default": 0},
            ],
        },
    )
    assert lint_dir(tmp_path) == []


def test_record_without_namespace(tmp_path: Path) -> None:
    """A record in the null namespace is a `namespace` issue."""
    write(tmp_path, "Bare.v1.avsc", {"type": "record", "name": "Bare", "fields": []})
    issues = lint_dir(tmp_path)
    assert issues == [f"{tmp_path / 'Bare.v1.avsc'}: record `Bare` has no namespace [namespace]"]


def test_cli_lint_reports_and_exits_one(tmp_path: Path) -> None:
    """`choreo schemas lint` lists issues and exits 1; a clean directory exits 0."""
    runner = CliRunner()
    clean = runner.invoke(schemas, ["lint", str(REPO / "schemas")])
    assert clean.exit_code == 0 and "no lint issues" in clean.output
    # the count is of the directory's own files, not of choreo's built-in schemas
    own = len(list((REPO / "schemas").rglob("*.avsc")))
    assert clean.output.startswith(f"{own} schema files in {REPO / 'schemas'}, no lint issues")
    write(tmp_path / "one", "Solo.v1.avsc",
          {"type": "record", "name": "Solo", "namespace": "t", "doc": "d", "fields": []})
    single = runner.invoke(schemas, ["lint", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    assert single.output.startswith("1 schema file in "), single.output
    write(tmp_path, "Bare.v1.avsc", {"type": "record", "name": "Bare", "fields": []})
    dirty = runner.invoke(schemas, ["lint", str(tmp_path)])
    assert dirty.exit_code == 1 and "[namespace]" in dirty.output
