"""``choreo check``, ``choreo graph`` and ``choreo asyncapi``: read a choreography's declarations.

Each command takes a TARGET: a module (``services.order``), a package (``services``,
searched recursively), ``module:attribute`` (a Service, Saga, Choreography or a list of
them), or a file or package path in place of the module (``./services/order.py``,
``services/``; see :mod:`choreo.choreography.discovery`). The current directory is put on
``sys.path`` first, so a project's own modules import without installing them.

Exit codes: 0 ok (``check``: no error, and no warning with ``--strict``), 1 problems found
(``check`` only), 2 the target or the schemas could not be loaded (a missing module or
file, a syntax error or an exception in the module's top-level code, an invalid schema),
or the command line is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import click

from choreo.choreography.checks import Problem, Severity
from choreo.choreography.graph import Choreography
from choreo.cli._common import import_from_cwd
from choreo.errors import ChoreoError

__all__ = ["asyncapi", "check", "graph"]

F = TypeVar("F", bound=Callable[..., Any])

_EXIT_PROBLEMS = 1
_EXIT_LOAD_ERROR = 2
_NARROW = 100
"""Below this many terminal columns problems are listed as paragraphs, not a table."""
_MAX_MESSAGE_CHARS = 4_000

_target_argument = click.argument("target")
_schemas_option = click.option(
    "--schemas",
    "schemas_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory of .avsc schemas (every event type must have one; payloads for asyncapi).",
)
_output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)


def _format_option(*choices: str, help_text: str) -> Callable[[F], F]:
    """Return a ``--format`` option (passed as ``fmt``) offering ``choices``, the first default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help=help_text,
    )


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(_EXIT_LOAD_ERROR)


def _load(target: str) -> Choreography:
    """Return the choreography at ``target``, with the current directory importable."""
    from choreo.choreography.discovery import load_choreography

    import_from_cwd()
    try:
        return load_choreography(target)
    except ChoreoError as exc:
        _fail(str(exc))


def _load_function(spec: str) -> Callable[[str], str]:
    """Return the function named ``module:function`` (the current directory importable)."""
    import importlib

    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        _fail(f"--topic-naming {spec!r}: expected MODULE:FUNCTION, e.g. myapp.topics:topic_of")
    import_from_cwd()
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        _fail(
            f"--topic-naming {spec!r}: {exc}; give MODULE:FUNCTION importable from the current"
            " directory, e.g. myapp.topics:topic_of"
        )
    if not callable(function):
        _fail(
            f"--topic-naming {spec!r} is not a function: name a function taking an event type"
            " and returning its topic"
        )
    return cast("Callable[[str], str]", function)


def _load_schemas(schemas_dir: Path | None) -> object | None:
    if schemas_dir is None:
        return None
    from choreo.avro.lookup import resolve_schemas

    try:
        return resolve_schemas(schemas_dir)
    except ChoreoError as exc:
        _fail(
            f"cannot load schemas from {schemas_dir}: {exc} (fix the file named, or point"
            " --schemas at the directory of your .avsc files; choreo schemas lint DIR says more)"
        )


def _write(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _problem_dict(problem: Problem) -> dict[str, str | None]:
    return {
        "severity": problem.severity.value,
        "code": problem.code.value,
        "message": problem.message,
        "service": problem.service,
        "handler": problem.handler,
        "event": problem.event,
        "chain": problem.chain or None,
    }


def _print_problems(problems: list[Problem]) -> None:
    """Print ``problems`` as a table, or as paragraphs in a terminal under 100 columns."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    from choreo.safety.terminal import console, data

    out = console()
    if out.width < _NARROW:
        out.print(Text("choreography problems", style="bold"))
        for problem in problems:
            style = "red" if problem.severity is Severity.ERROR else "yellow"
            out.print(Text(f"{problem.severity.value} {problem.code.value}", style=style))
            out.print(Padding(data(problem.message, max_chars=_MAX_MESSAGE_CHARS), (0, 0, 0, 2)))
        return
    table = Table(title="choreography problems", title_justify="left")
    table.add_column("level", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("problem", overflow="fold")
    for problem in problems:
        style = "red" if problem.severity is Severity.ERROR else "yellow"
        table.add_row(
            problem.severity.value,
            problem.code.value,
            data(problem.message, max_chars=_MAX_MESSAGE_CHARS),
            style=style,
        )
    out.print(table)


def _checked(choreography: Choreography, schemas: object | None) -> list[Problem]:
    """Return the choreography's problems; a check that cannot run ends with exit 2."""
    from choreo.choreography.checks import check as check_choreography

    try:
        return check_choreography(choreography, schemas)
    except ChoreoError as exc:
        _fail(f"cannot check the choreography: {exc}")


@click.command("check")
@_target_argument
@_schemas_option
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@_format_option("table", "json", help_text="Print problems as a table or as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON (--format json).")
def check(target: str, schemas_dir: Path | None, strict: bool, fmt: str, as_json: bool) -> None:
    """Check TARGET's choreography: exit 0 if consistent, 1 naming each problem, 2 if it
    cannot be loaded.

    TARGET is a module (pkg.module), a package, module:attribute, or a path to a .py file
    or a package directory. For every failure event the chain of compensations it
    triggers is derived and must undo the steps completed before it, the last first.
    """
    if as_json:
        fmt = "json"
    choreography = _load(target)
    schemas = _load_schemas(schemas_dir)
    problems = _checked(choreography, schemas)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    failed = bool(errors) or (strict and bool(problems))
    if fmt == "json":
        from choreo.safety.jsonsafe import dumps

        click.echo(dumps([_problem_dict(p) for p in problems], indent=2, html_safe=False))
    elif problems:
        _print_problems(problems)
    if not failed and fmt == "table":
        warnings = len(problems) - len(errors)
        click.echo(
            f"ok: {len(choreography.services)} services, {len(choreography.handlers)} handlers, "
            f"{len(choreography.event_types)} events"
            + (f" ({_plural(warnings, 'warning')})" if warnings else "")
        )
    if failed:
        if fmt == "table":
            warnings = len(problems) - len(errors)
            click.echo(f"{_plural(len(errors), 'error')}, {_plural(warnings, 'warning')}", err=True)
        sys.exit(_EXIT_PROBLEMS)


@click.command("graph")
@_target_argument
@_format_option("mermaid", "dot", help_text="Mermaid flowchart or Graphviz DOT.")
@_output_option
def graph(target: str, fmt: str, output: Path | None) -> None:
    """Draw TARGET's choreography as Mermaid or Graphviz DOT."""
    from choreo.choreography.drawing import to_dot, to_mermaid

    choreography = _load(target)
    _write(to_mermaid(choreography) if fmt == "mermaid" else to_dot(choreography), output)


@click.command("asyncapi")
@_target_argument
@_schemas_option
@_output_option
@_format_option("yaml", "json", help_text="Output format.")
@click.option("--title", default="choreo choreography", show_default=True, help="info.title")
@click.option("--api-version", default="1.0.0", show_default=True, help="info.version")
@click.option("--bootstrap", default=None, help="Kafka bootstrap host:port to list as a server.")
@click.option(
    "--topic-naming",
    default=None,
    metavar="MODULE:FUNCTION",
    help="Function mapping an event type to its topic (default: the event type itself).",
)
def asyncapi(
    *,
    target: str,
    schemas_dir: Path | None,
    output: Path | None,
    fmt: str,
    title: str,
    api_version: str,
    bootstrap: str | None,
    topic_naming: str | None,
) -> None:
    """Export an AsyncAPI 3 document of TARGET's channels, operations and messages."""
    from choreo.choreography.asyncapi import dump_asyncapi, to_asyncapi

    choreography = _load(target)
    schemas = _load_schemas(schemas_dir)
    naming = _load_function(topic_naming) if topic_naming else None
    document = to_asyncapi(
        choreography,
        schemas,
        title=title,
        version=api_version,
        bootstrap=bootstrap,
        topic_naming=naming,
    )
    _write(dump_asyncapi(document, fmt), output)
