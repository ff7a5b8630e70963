"""Why a record is not an event: the tracker's record accounting and dead-letter notes.

The tracker reads records that choreo did not necessarily write. Every record ends up in
exactly one place: an event of a saga, a duplicate, a dead letter, a record without
choreo headers (``ignored``), or an *unreadable* record counted under the reason
:func:`unreadable_reason` gives. Only a record whose envelope is valid starts or changes
a saga; a valid envelope has every required choreo header exactly once, non-null,
UTF-8, within :data:`MAX_HEADER_BYTES`, a known role and an integer produced-at time
within 64 bits.

A dead-letter record (``choreo-dlq-*`` headers) is noted on its saga's timeline as a
:class:`~choreo.tracker.model.DeadLetterNote` with the reason the service gave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from choreo.model.envelope import HEADER_PREFIX, Header, Role
from choreo.tracker.model import DeadLetterNote
from choreo.transports.base import Record

__all__ = [
    "MAX_HEADER_BYTES",
    "dead_letter_note",
    "header_problem",
    "unreadable_reason",
]

MAX_HEADER_BYTES: Final = 1024
"""The longest choreo header value read; a longer one makes the record unreadable."""
MAX_NOTE_CHARS: Final = 2000
"""The longest dead-letter message kept for a timeline."""

_REQUIRED: Final = (
    Header.CORRELATION_ID,
    Header.EVENT_ID,
    Header.EVENT_TYPE,
    Header.ROLE,
    Header.PRODUCED_AT,
)
_NON_EMPTY: Final = frozenset((Header.CORRELATION_ID, Header.EVENT_ID, Header.EVENT_TYPE))
_ROLE_VALUES: Final = frozenset(role.value.encode() for role in Role)
_INT64: Final = 2**63


def _is_choreo(name: str) -> bool:
    return name.startswith(HEADER_PREFIX) or name == Header.TRACEPARENT


def header_problem(headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """Return why a record's choreo headers cannot be trusted (repeated or null), or None.

    Headers of other names may repeat or be null: they are not choreo's.
    """
    seen: set[str] = set()
    for name, value in headers:
        if not _is_choreo(name):
            continue
        if name in seen:
            return f"duplicate header {name}"
        seen.add(name)
        if value is None:
            return f"null header {name}"
    return None


def _value_problem(name: str, value: object) -> str | None:
    """Return what is wrong with one choreo header's value, or None."""
    if value is None:
        return f"null header {name}"
    if not isinstance(value, bytes):
        return f"header {name} is not bytes"
    problem = None
    if not value and name in _NON_EMPTY:
        problem = f"empty header {name}"
    elif len(value) > MAX_HEADER_BYTES:
        problem = f"header {name} longer than {MAX_HEADER_BYTES} bytes"
    else:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            problem = f"header {name} is not UTF-8"
    return problem


def _time_problem(produced: bytes) -> str | None:
    """Return what is wrong with a produced-at value, or None."""
    try:
        at = int(produced)
    except ValueError:
        return f"header {Header.PRODUCED_AT} is not an integer"
    if not -_INT64 <= at < _INT64:
        return f"header {Header.PRODUCED_AT} out of the 64-bit range"
    return None


def unreadable_reason(headers: Mapping[str, object]) -> str:
    """Return why the choreo headers in ``headers`` (a dict of them) are not a valid envelope.

    Called once a record failed the tracker's fast checks; the first problem found wins,
    in a fixed order (required headers, then every choreo header, then the role and time).
    """
    missing = [name for name in _REQUIRED if name not in headers]
    if missing:
        return f"missing header {missing[0]}"
    for name, value in headers.items():
        problem = _value_problem(name, value) if _is_choreo(name) else None
        if problem is not None:
            return problem
    if headers[Header.ROLE] not in _ROLE_VALUES:
        return f"unknown role in {Header.ROLE}"
    produced = headers[Header.PRODUCED_AT]
    assert isinstance(produced, bytes)  # checked above
    return _time_problem(produced) or "broken choreo header"


def _text(headers: Mapping[str, bytes | None], name: str, limit: int = 256) -> str:
    raw = headers.get(name)
    if not isinstance(raw, bytes):
        return ""
    text = raw[: limit * 4].decode("utf-8", "replace")
    return text[:limit]


def _number(headers: Mapping[str, bytes | None], name: str) -> int | None:
    raw = headers.get(name)
    if not isinstance(raw, bytes) or len(raw) > 24:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def dead_letter_note(headers: Mapping[str, bytes | None], record: Record) -> DeadLetterNote:
    """Return what a dead-letter record says about the event it carries, lengths bounded."""
    flag = headers.get(Header.NEEDS_HUMAN)
    message = _text(headers, Header.DLQ_REASON, MAX_NOTE_CHARS)
    return DeadLetterNote(
        event_id=_text(headers, Header.EVENT_ID),
        event_type=_text(headers, Header.EVENT_TYPE),
        reason=message.split(":", 1)[0][:100],
        message=message,
        error_class=_text(headers, Header.DLQ_ERROR_CLASS, 200),
        service=_text(headers, Header.DLQ_SERVICE),
        failed_at_ms=_number(headers, Header.DLQ_FAILED_AT),
        source=(
            f"{_text(headers, Header.DLQ_SOURCE_TOPIC)}/"
            f"{_number(headers, Header.DLQ_SOURCE_PARTITION)}@"
            f"{_number(headers, Header.DLQ_SOURCE_OFFSET)}"
        ),
        where=f"{record.topic}/{record.partition}@{record.offset}",
        needs_human=isinstance(flag, bytes) and flag.strip().lower() not in (b"false", b"0", b"no"),
    )
