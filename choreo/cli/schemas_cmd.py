"""``choreo schemas``: load, lint, check the evolution of, and generate classes from schemas.

Subcommands: ``check DIR [--mode M]`` (the schema-evolution gate), ``lint DIR``,
``codegen DIR -o FILE`` and ``show DIR [NAME]``. Exit codes: 0 ok, 1 problems found,
2 the schemas could not be loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from choreo.errors import SchemaError

__all__ = ["schemas"]

_EXIT_PROBLEMS = 1
_EXIT_LOAD_ERROR = 2

_dir_argument = click.argument(
    "schema_dir", type=click.Path(exists=True, file_okay=False, path_type=Path)
)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(_EXIT_LOAD_ERROR)


def _relative(source: str) -> str:
    try:
        return str(Path(source).resolve().relative_to(Path.cwd()))
    except ValueError:
        return source


@click.group(name="schemas")
def schemas() -> None:
    """Load, lint, check the evolution of, and generate classes from Avro schemas."""


@schemas.command()
@_dir_argument
@click.option(
    "--mode",
    type=click.Choice(
        [
            "NONE",
            "BACKWARD",
            "BACKWARD_TRANSITIVE",
            "FORWARD",
            "FORWARD_TRANSITIVE",
            "FULL",
            "FULL_TRANSITIVE",
        ],
        case_sensitive=False,
    ),
    default="BACKWARD_TRANSITIVE",
    show_default=True,
    help="Compatibility every new version must keep with the earlier ones.",
)
def check(schema_dir: Path, mode: str) -> None:
    """Check that every schema version can evolve from its earlier ones; exit 1 if not."""
    from rich.table import Table
    from rich.text import Text

    from choreo.avro.compat import check_registry
    from choreo.avro.loader import load_directory
    from choreo.safety.terminal import console as safe_console
    from choreo.safety.terminal import data

    try:
        registry = load_directory(schema_dir)
    except SchemaError as exc:
        _fail(str(exc))
    results = check_registry(registry, mode.upper())
    console = safe_console()
    table = Table(title=f"schema evolution ({mode.upper()})")
    table.add_column("schema", no_wrap=True)
    table.add_column("versions", justify="right")
    table.add_column("result", no_wrap=True)
    failed = 0
    for name, findings in results.items():
        versions = ", ".join(f"v{v.version}" for v in registry.versions(name))
        if findings:
            failed += 1
            table.add_row(data(name), versions, Text(f"✗ {len(findings)} problem(s)", "red"))
        else:
            table.add_row(data(name), versions, Text("✓ compatible", "green"))
    console.print(table)
    for findings in results.values():
        for finding in findings:
            click.echo(finding.message)
    if failed:
        click.echo(f"{failed} schema(s) break {mode.upper()} compatibility", err=True)
        sys.exit(_EXIT_PROBLEMS)


def _count(number: int, noun: str) -> str:
    """Return ``number`` and ``noun``, plural unless the number is 1 (``7 schema files``)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


@schemas.command()
@_dir_argument
@click.option("--max-depth", type=int, default=None, help="Nesting limit (default 8).")
def lint(schema_dir: Path, max_depth: int | None) -> None:
    """Lint schemas (recursion, depth, name clashes, namespaces); exit 1 on any issue."""
    from choreo.avro.lint import lint_files
    from choreo.avro.loader import BUILTIN_DIR, load_files

    files = sorted(schema_dir.rglob("*.avsc"))
    builtin = sorted(BUILTIN_DIR.rglob("*.avsc"))  # loaded too: schemas may refer to them
    try:
        loaded = load_files([*builtin, *files], lint=False)
    except SchemaError as exc:
        _fail(str(exc))
    issues = lint_files(loaded, max_depth=max_depth)
    for issue in issues:
        click.echo(str(issue))
    if issues:
        sys.exit(_EXIT_PROBLEMS)
    click.echo(
        f"{_count(len(files), 'schema file')} in {schema_dir}, no lint issues "
        f"(with choreo's {len(builtin)} built-in schemas they may use)"
    )


@schemas.command()
@_dir_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Do not write; exit 1 when OUTPUT is not what codegen would write.",
)
def codegen(schema_dir: Path, output: Path | None, check_only: bool) -> None:
    """Generate frozen dataclass event classes from the schemas in SCHEMA_DIR."""
    from choreo.avro.codegen import generate_module
    from choreo.avro.loader import load_directory

    try:
        registry = load_directory(schema_dir)
    except SchemaError as exc:
        _fail(str(exc))
    label = schema_dir.as_posix().rstrip("/") + "/"
    source = generate_module(registry, source_label=label)
    if check_only:
        if output is None:
            _fail(
                "--check needs -o FILE, the generated module to compare: e.g."
                " choreo schemas codegen schemas/ -o myapp/events.py --check"
            )
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != source:
            click.echo(
                f"{output} is out of date; regenerate it: choreo schemas codegen {label} -o"
                f" {output}",
                err=True,
            )
            sys.exit(_EXIT_PROBLEMS)
        click.echo(f"{output} is up to date")
        return
    if output is None:
        click.echo(source, nl=False)
    else:
        output.write_text(source, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@schemas.command()
@_dir_argument
@click.argument("name", required=False)
@click.option("--version", "version", type=int, default=None, help="Version (default: latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON (for scripts).")
def show(schema_dir: Path, name: str | None, version: int | None, as_json: bool) -> None:
    """List the schemas in SCHEMA_DIR, or show one (self-contained JSON and fingerprint)."""
    import json

    from rich.table import Table

    from choreo.avro.loader import load_directory
    from choreo.errors import UnknownEventError
    from choreo.safety.terminal import console as safe_console
    from choreo.safety.terminal import data

    try:
        registry = load_directory(schema_dir)
    except SchemaError as exc:
        _fail(str(exc))
    console = safe_console()
    if name is None and as_json:
        from choreo.safety.jsonsafe import dumps

        listing = [
            {
                "name": item.full_name,
                "version": item.version,
                "fingerprint": item.fingerprint_hex,
                "file": _relative(item.source),
            }
            for item in registry
        ]
        click.echo(dumps(listing, indent=2, html_safe=False))
        return
    if name is None:
        table = Table(title=data(f"schemas in {schema_dir}"))
        table.add_column("schema", no_wrap=True)
        table.add_column("version", no_wrap=True)
        table.add_column("fingerprint", no_wrap=True)
        table.add_column("file", overflow="fold")
        for item in registry:
            table.add_row(
                data(item.full_name), f"v{item.version}", item.fingerprint_hex,
                data(_relative(item.source)),
            )
        console.print(table)
        return
    try:
        item = registry.get(name, version)
    except UnknownEventError as exc:
        _fail(f"{exc} (choreo schemas show {schema_dir} lists the schemas and versions)")
    click.echo(f"{item.full_name} v{item.version}  ({item.source})")
    click.echo(f"fingerprint (CRC-64-AVRO, little-endian): {item.fingerprint_hex}")
    click.echo(f"canonical form: {item.canonical_form}")
    click.echo(json.dumps(item.schema, indent=2))
