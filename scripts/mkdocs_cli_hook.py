"""MkDocs hook: replace the CLI-reference marker in a page with the live ``--help`` texts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_reference import MARKER, render


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill the marker of docs/reference/cli.md with every command's help."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
