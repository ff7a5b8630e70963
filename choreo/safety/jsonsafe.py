"""JSON that every parser accepts, whatever strings the data holds.

:func:`dumps` writes ASCII-only JSON: characters outside the Basic Multilingual Plane
become UTF-16 surrogate-pair escapes (as RFC 8259 says) and an unpaired surrogate, which
no UTF-8 encoder and no strict JSON parser accepts, becomes U+FFFD. ``<``, ``>`` and ``&``
are escaped too (unless ``html_safe=False``), so a response cannot be sniffed as HTML.
Values json cannot encode go through ``default``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["clean", "dumps"]

_LONE_SURROGATE: Final = re.compile(
    r"[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]"
)


def clean(text: str) -> str:
    """Return ``text`` with every unpaired surrogate replaced by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _cleaned(value: Any, default: Callable[[Any], Any] | None, depth: int) -> Any:
    if depth > 200:
        raise ValueError("JSON value nested more than 200 levels deep")
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {
            (clean(k) if isinstance(k, str) else k): _cleaned(v, default, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_cleaned(v, default, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if default is not None and not (value is None or isinstance(value, bool | int | float)):
        return _cleaned(default(value), None, depth + 1)
    return value


def dumps(
    value: object,
    *,
    default: Callable[[Any], Any] | None = None,
    indent: int | None = None,
    html_safe: bool = True,
) -> str:
    """Return ``value`` as ASCII JSON with unpaired surrogates replaced (see module doc).

    Floats that are not finite (not valid JSON) are written as the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"``; a value nested deeper than 200 levels raises
    ``ValueError``.
    """
    text = json.dumps(
        _cleaned(value, default, 0),
        ensure_ascii=True,
        allow_nan=False,
        indent=indent,
        separators=(",", ":") if indent is None else None,
    )
    if html_safe:
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text
