"""Timestamps from data are judged before use: only years 1 to 9999 (UTC) are real times.

A produced-at header or a record timestamp is whatever a producer wrote; far outside the
calendar it makes :mod:`datetime` raise (``OverflowError``, ``ValueError``, ``OSError``).
:func:`valid_ms` says whether a value is a showable time and :func:`format_ms` shows an
invalid one as such, so no command crashes on it.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

__all__ = ["MAX_MS", "MIN_MS", "format_ms", "valid_ms"]

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
