"""Make a string from data safe to show: control, bidi and unpaired surrogate code points
become visible escapes, and its length is bounded.

A terminal interprets ESC sequences (colours, cursor moves, window titles, hyperlinks),
carriage returns and backspaces; bidirectional controls reorder what is shown around them
(the "Trojan Source" trick); unpaired surrogates cannot be encoded as UTF-8 at all. None of
them may reach an operator's screen or a JSON document from data, so :func:`printable`
replaces each with its Python escape (``\\x1b``, ``\\u202e``, ``\\ud800``), which is
unambiguous and shows the operator what was there.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DEFAULT_MAX_CHARS", "clip", "printable"]

DEFAULT_MAX_CHARS: Final = 500
"""The longest piece of data shown by default; the rest is cut with a note of its length."""

_UNSAFE: Final = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0 and C1 controls, DEL (ESC, CR, BS, NEL...)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional marks and controls
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff"  # surrogates: only ever unpaired in a Python str
    "]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clip(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return ``text`` cut to ``max_chars`` characters, noting how many were left out."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}… (+{len(text) - max_chars} chars)"


def printable(value: object, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return ``value`` as text with every unsafe code point escaped and at most ``max_chars``.

    ``None`` becomes ``-``; bytes are shown as their ``repr``; other non-strings as ``str``.
    The result contains no control character, no bidirectional control and no surrogate,
    so it is safe for a terminal, a log line and any Unicode encoding.
    """
    if value is None:
        return "-"
    if isinstance(value, bytes | bytearray):
        text = repr(bytes(value))
    elif isinstance(value, str):
        text = value
    else:
        text = str(value)
    text = clip(text, max_chars)
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)
