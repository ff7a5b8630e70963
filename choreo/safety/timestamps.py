"""Timestamps from data are judged before use: only years 1 to 9999 (UTC) are real times.

A produced-at header or a record timestamp is whatever a producer wrote; far outside the
calendar it makes :mod:`datetime` raise (``OverflowError``, ``ValueError``, ``OSError``).
:func:`valid_ms` says whether a value is a showable time and :func:`format_ms` shows an
invalid one as such, so no command crashes on it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

__all__ = ["MAX_MS", "MIN_MS", "format_ms", "parse_moment", "valid_ms"]

_RELATIVE: Final = re.compile(r"^(\d{1,12}(?:\.\d{1,6})?)\s*(ms|s|m|min|h|d|w)(?:\s*ago)?$")
_UNIT_MS: Final = {
    "ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000,
    "w": 604_800_000,
}
_MAX_TEXT: Final = 64
MOMENT_FORMS: Final = (
    "a duration ago (30s, 15m, 2h, 7d), an ISO 8601 time (2026-12-03T10:00:00Z,"
    " 2026-12-03 10:00; no zone means UTC) or epoch milliseconds"
)
"""What :func:`parse_moment` accepts, for error messages."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MIN_MS: Final = int((dt.datetime(1, 1, 1, tzinfo=dt.UTC) - _EPOCH).total_seconds()) * 1000
"""Epoch ms of 0001-01-01T00:00:00Z, the earliest time shown as a date."""
MAX_MS: Final = int((dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC) - _EPOCH)
                    .total_seconds()) * 1000 + 999
"""Epoch ms of 9999-12-31T23:59:59.999Z, the latest time shown as a date."""


def valid_ms(ms: object) -> bool:
    """Return True when ``ms`` is an int of epoch milliseconds within years 1 to 9999 UTC."""
    return isinstance(ms, int) and not isinstance(ms, bool) and MIN_MS <= ms <= MAX_MS


def format_ms(ms: int | None, *, missing: str = "-") -> str:
    """Return epoch ms as ``YYYY-MM-DD HH:MM:SS.mmm`` UTC, ``missing`` for None, or
    ``invalid time (N ms)`` when it is out of range (N cut to 24 digits)."""
    if ms is None:
        return missing
    if not valid_ms(ms):
        shown = str(ms)
        if len(shown) > 24:
            shown = shown[:24] + "…"
        return f"invalid time ({shown} ms)"
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return f"{moment.year:04d}-{moment:%m-%d %H:%M:%S}.{ms % 1000:03d}"


def parse_moment(text: str, *, now_ms: int) -> int:
    """Return epoch ms for ``text``: a duration before ``now_ms``, ISO 8601 or epoch ms.

    Durations: a number and ms, s, m/min, h, d or w (``2h`` and ``2h ago`` are the same);
    an ISO time without a zone is UTC, a date alone its midnight. Raises ``ValueError``
    naming the accepted forms, or for a time outside years 1 to 9999.
    """
    text = text.strip()
    if len(text) > _MAX_TEXT:
        raise ValueError(f"a time has at most {_MAX_TEXT} characters: give {MOMENT_FORMS}")
    if text.isascii() and text.isdigit():
        moment = int(text)
    elif (relative := _RELATIVE.match(text)) is not None:
        moment = now_ms - int(float(relative.group(1)) * _UNIT_MS[relative.group(2)])
    else:
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is not a time: give {MOMENT_FORMS}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        moment = int((parsed - _EPOCH).total_seconds() * 1000)
    if not valid_ms(moment):
        raise ValueError(f"{text!r} is outside the years 1 to 9999: give {MOMENT_FORMS}")
    return moment
