"""Render ``choreo --help`` and every subcommand's help as Markdown, from click itself.

Used by the documentation site (scripts/mkdocs_cli_hook.py fills docs/reference/cli.md
with it at build time), so the CLI reference cannot drift from the code.
``python scripts/cli_reference.py`` prints it.
"""

from __future__ import annotations

import click

MARKER = "<!-- cli-reference -->"


def _walk(command: click.Command, ctx: click.Context, path: list[str]) -> list[str]:
    """Return Markdown sections for ``command`` and, for a group, its subcommands."""
    lines = [f"{'#' * min(len(path) + 1, 4)} `{' '.join(path)}`", "", "```text"]
    lines += [command.get_help(ctx).rstrip(), "```", ""]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = click.Context(sub, info_name=name, parent=ctx, terminal_width=88)
            lines += _walk(sub, sub_ctx, [*path, name])
    return lines


def render() -> str:
    """Return the help of ``choreo`` and of every (sub)command, as Markdown."""
    from choreo.cli import main

    ctx = click.Context(main, info_name="choreo", terminal_width=88)
    return "\n".join(_walk(main, ctx, ["choreo"]))


if __name__ == "__main__":
    print(render())
