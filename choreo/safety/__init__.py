"""Defences against hostile input: showing data safely, bounding timestamps, hiding secrets.

Every string that comes from data (a record's headers, a payload, a file, a registry)
reaches a terminal only through :mod:`choreo.safety.terminal`, JSON only through
:mod:`choreo.safety.jsonsafe`, and every timestamp from data is judged by
:mod:`choreo.safety.timestamps` before it is formatted. Configuration values that are
secrets are masked by :mod:`choreo.safety.redact` in reprs, error messages and logs.

This package depends on nothing else in choreo, so every layer may use it.
"""

from __future__ import annotations

from choreo.safety.text import clip, printable
from choreo.safety.timestamps import MAX_MS, MIN_MS, format_ms, valid_ms

__all__ = ["MAX_MS", "MIN_MS", "clip", "format_ms", "printable", "valid_ms"]
