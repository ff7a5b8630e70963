"""W3C Trace Context: the ``traceparent`` header carried from an event to the events it causes.

A traceparent is ``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``. A saga's
start opens a new trace; each emitted event keeps the incoming trace id and gets its own
span id. The span id is derived from the emitted event's (deterministic) id, so a replay
after a crash re-emits identical headers.
"""

from __future__ import annotations

import os
import re
from typing import Final

__all__ = ["child_traceparent", "new_traceparent", "parse_traceparent"]

_PATTERN: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_VALID_00: Final = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_UUID_LENGTH: Final = 36


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """Return ``(trace_id, span_id, flags)`` of a valid version-00 traceparent, else None."""
    match = _PATTERN.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version != "00" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags


def new_traceparent(*, sampled: bool = True) -> str:
    """Return the traceparent of a new trace with random trace and span ids."""
    trace_id = os.urandom(16).hex()
    span_id = os.urandom(8).hex()
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def child_traceparent(parent: str, span_seed: str) -> str:
    """Return a traceparent in ``parent``'s trace with a span id taken from ``span_seed``.

    ``span_seed`` is a hex string (an event id, dashes allowed); its last 16 hex digits are
    the new span id. An invalid ``parent`` starts a new trace, as W3C Trace Context asks.
    """
    if len(span_seed) == _UUID_LENGTH and span_seed[23] == "-":
        span = span_seed[19:23] + span_seed[24:]
    else:
        span = span_seed.replace("-", "")[-16:]
    if len(span) != 16 or span == _ZERO_SPAN:
        span = os.urandom(8).hex()
    if _VALID_00.fullmatch(parent):
        return f"{parent[:36]}{span}{parent[52:]}"
    return f"00-{os.urandom(16).hex()}-{span}-01"
