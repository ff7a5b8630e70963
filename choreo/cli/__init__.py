"""The ``choreo`` command line: one module per command, imported only when it runs.

Commands are registered by name in :data:`COMMANDS` as ``"module:attribute"`` so
``choreo --help`` stays fast and a command's heavy imports (Kafka clients, the web
viewer) load only when that command is used.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from choreo._version import __version__

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, attribute, ) -- each attribute is a click.Command
    "schemas": ("choreo.cli.schemas_cmd", "schemas"),
    "check": ("choreo.cli.graph_cmd", "check"),
    "graph": ("choreo.cli.graph_cmd", "graph"),
    "asyncapi": ("choreo.cli.graph_cmd", "asyncapi"),
    "run": ("choreo.cli.run_cmd", "run"),
    "sagas": ("choreo.cli.tracker_cmd", "sagas"),
    "trace": ("choreo.cli.tracker_cmd", "trace"),
    "watch": ("choreo.cli.tracker_cmd", "watch"),
    "verify": ("choreo.cli.tracker_cmd", "verify"),
    "export": ("choreo.cli.export_cmd", "export"),
    "import": ("choreo.cli.export_cmd", "import_"),
    "ui": ("choreo.cli.ui_cmd", "ui"),
    "tracker": ("choreo.cli.tracker_run_cmd", "tracker"),
    "demo": ("choreo.cli.demo_cmd", "demo"),
    "transactions": ("choreo.cli.transactions_cmd", "transactions"),
}

HELP: dict[str, str] = {
    "schemas": "Load, lint, check the evolution of, and generate classes from Avro schemas.",
    "check": "Check a choreography (compensation chains too); exit 1 on problems, 2 if unloadable.",
    "graph": "Draw a choreography as Mermaid or Graphviz DOT.",
    "asyncapi": "Export an AsyncAPI 3 document of a choreography's channels and messages.",
    "run": "Run one service's worker (MODULE:SERVICE) against a transport.",
    "sagas": "List sagas with their statuses, with filters and counts per status.",
    "trace": "Show one saga's timeline as a tree.",
    "watch": "Show live saga counts and the latest sagas, updating in place.",
    "verify": "Check the saga guarantee over the whole log; exit 1 on any violation.",
    "export": "Export saga topics to an Avro object container file.",
    "import": "Import an Avro object container file into topics.",
    "ui": "Serve the saga-trace web viewer on 127.0.0.1.",
    "tracker": "Run tracker instances in a group that materialize saga summaries.",
    "demo": "Run the order-fulfilment demo saga with the trace viewer.",
    "transactions": "Find Kafka transactions left hanging after a broker restart; end them.",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return every registered command name, sorted."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command registered as ``cmd_name``."""
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target
        module = importlib.import_module(module_name)
        command: click.Command = getattr(module, attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a choreo error that escaped it ends the run as a clean message.

        The message (secrets masked, see :class:`~choreo.errors.ChoreoError`) says what
        went wrong and how to fix it; exit status 1, no traceback.
        """
        from choreo.errors import ChoreoError

        try:
            return super().invoke(ctx)
        except ChoreoError as exc:
            raise click.ClickException(str(exc)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands with their one-line help without importing them."""
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="choreo")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="Level of choreo's log lines (written to stderr).",
)
def main(log_level: str) -> None:
    """choreo: choreographed sagas over Apache Kafka."""
    from rich.logging import RichHandler

    from choreo.safety.redact import install_log_redaction
    from choreo.safety.terminal import console

    install_log_redaction()  # choreo's and both Kafka clients' log lines never show a secret

    logging.basicConfig(
        level=log_level.upper(),
        format="%(name)s %(message)s",
        handlers=[
            RichHandler(console=console(stderr=True), show_path=False, rich_tracebacks=False)
        ],
    )


def run(*args: Any) -> None:  # pragma: no cover - console entry helper
    """Run the CLI (used by ``python -m choreo``)."""
    main(*args)
