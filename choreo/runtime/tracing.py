"""W3C Trace Context: the ``traceparent`` header carried from an event to the events it causes.

A traceparent is ``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``. A saga's
start opens a new trace; each emitted event keeps the incoming trace id and gets its own
span id. The span id is derived from the emitted event's (deterministic) id, so a replay
after a crash re-emits identical headers.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import Final, cast

__all__ = [
    "all_valid",
    "ambient_traceparent",
    "child_traceparent",
    "is_valid",
    "new_traceparent",
    "parse_traceparent",
]

_PATTERN: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_VALID_00: Final = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_VALID_00_BYTES: Final = re.compile(_VALID_00.pattern.encode())
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_UUID_LENGTH: Final = 36
_LENGTH: Final = 55  # of a version-00 traceparent
_LINE: Final = _LENGTH + 1
_HEX: Final = b"0123456789abcdef"
_ZERO_TRACE_FIELD: Final = b"-" + b"0" * 32 + b"-"
_ZERO_SPAN_FIELD: Final = b"-" + b"0" * 16 + b"-"


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


def ambient_traceparent() -> str | None:
    """Return the traceparent of the current OpenTelemetry span, or None when there is none.

    A saga started inside a traced operation (an HTTP request, a job) joins its trace:
    :class:`~choreo.runtime.publisher.Publisher` uses this before opening a new trace.
    OpenTelemetry is never imported here: without it (or without a current span) the
    answer is None at the cost of one dictionary lookup.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 1:02x}"


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


def is_valid(traceparent: bytes) -> bool:
    """Return True when ``traceparent`` (a header's bytes) is a valid version-00 one."""
    return _VALID_00_BYTES.fullmatch(traceparent) is not None


def all_valid(traceparents: Iterable[bytes | None]) -> bool:
    """Return True when every item but None is a valid version-00 traceparent (its bytes).

    Equal to checking each with the W3C pattern, but in a few passes over the joined
    items, at C speed: the worker validates a polled batch's traceparents at once. The
    items are joined with newlines; the result must be ``n`` lines of 55 characters of
    lowercase hex with dashes exactly at 2, 35 and 52 (and nowhere else), version
    ``00``, and neither an all-zero trace id nor an all-zero span id.
    """
    given = list(traceparents)
    items = cast("list[bytes]", given if None not in given else [i for i in given if i is not None])
    count = len(items)
    if not count:
        return True
    joined = b"\n".join(items)
    dashes, zeros = b"-" * count, b"0" * count
    return (
        len(joined) == _LINE * count - 1
        # nothing but hex digits and, in order, three dashes and a newline per item
        and joined.translate(None, _HEX) == b"---\n" * (count - 1) + b"---"
        and joined[_LENGTH::_LINE] == b"\n" * (count - 1)
        and joined[2::_LINE] == dashes
        and joined[35::_LINE] == dashes
        and joined[52::_LINE] == dashes
        and joined[0::_LINE] == zeros
        and joined[1::_LINE] == zeros
        and _ZERO_TRACE_FIELD not in joined
        and _ZERO_SPAN_FIELD not in joined
    )
