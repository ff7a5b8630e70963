"""The terminal surface: data reaches rich only as :class:`~rich.text.Text`, never as markup.

:func:`console` is the one rich console of the command line: markup, emoji codes and
highlighting are off, so no string (from data or not) is parsed as ``[style]`` markup,
``:emoji:`` or ``[link=…]``. :func:`data` turns any value from data into a plain ``Text``
whose unsafe code points are escaped (see :func:`choreo.safety.text.printable`), so
control sequences cannot reach the terminal either. Styles are applied to ``Text``
objects, never written into strings.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console
from rich.text import Text

from choreo.safety.text import DEFAULT_MAX_CHARS, printable

__all__ = ["console", "data"]


def data(value: object, style: str = "", *, max_chars: int = DEFAULT_MAX_CHARS) -> Text:
    """Return ``value`` from data as plain ``Text`` in ``style``, escaped and bounded."""
    return Text(printable(value, max_chars), style=style)


def console(
    *, stderr: bool = False, file: IO[str] | None = None, width: int | None = None
) -> Console:
    """Return a console that never interprets markup, emoji codes or highlighting."""
    return Console(
        stderr=stderr,
        file=file,
        width=width,
        markup=False,
        emoji=False,
        highlight=False,
    )
