"""Dead letters: records a service cannot handle, kept with the reason instead of blocking.

A dead letter is the ORIGINAL record (key, value and headers untouched) published to the
service's dead-letter topic with ``choreo-dlq-*`` headers saying why, where it came from,
which service gave up, when, and after how many handler attempts (0 when no handler ran).
When a compensation gives up, ``choreo-needs-human: true`` marks the saga as needing a
person: its completed steps are not all undone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from choreo.model.envelope import Header, headers_to_dict
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record

__all__ = ["DeadLetter", "DeadLetterReason", "dead_letter_id", "dead_letter_record"]

_MAX_REASON: Final = 1000
_DLQ_HEADERS: Final = frozenset(
    {
        Header.DLQ_REASON,
        Header.DLQ_ERROR_CLASS,
        Header.DLQ_SOURCE_TOPIC,
        Header.DLQ_SOURCE_PARTITION,
        Header.DLQ_SOURCE_OFFSET,
        Header.DLQ_SERVICE,
        Header.DLQ_FAILED_AT,
        Header.DLQ_ATTEMPTS,
        Header.NEEDS_HUMAN,
    }
)


class DeadLetterReason(enum.StrEnum):
    """Why a record was dead-lettered: the first word of the ``choreo-dlq-reason`` header."""

    UNDECODABLE = "undecodable"
    """The payload could not be decoded with the event type's schema."""
    BAD_ENVELOPE = "bad-envelope"
    """A choreo header is missing or invalid."""
    UNKNOWN_EVENT_TYPE = "unknown-event-type"
    """No schema or event class is known for the record's event type."""
    RETRIES_EXHAUSTED = "retries-exhausted"
    """The handler kept failing until its retry budget ran out."""
    COMPENSATION_EXHAUSTED = "compensation-exhausted"
    """A compensation kept failing until its budget ran out: a human is needed."""
    REFUSED = "refused-after-compensation"
    """A late command of a saga this service had compensated: never applied, nothing to do."""


def dead_letter_id(record: Record) -> str:
    """Return the outbox and inbox id of ``record``'s dead letter (from where it was read)."""
    return f"dlq:{record.topic}:{record.partition}:{record.offset}"


def dead_letter_record(
    record: Record,
    *,
    topic: str,
    reason: DeadLetterReason,
    error: BaseException | None,
    service: str,
    attempts: int,
    failed_at_ms: int,
) -> OutboxRecord:
    """Return the outbox record that dead-letters ``record`` to ``topic``.

    The reason header is ``"<reason>: <error message>"`` (cut to 1000 characters); a
    :data:`DeadLetterReason.COMPENSATION_EXHAUSTED` record also carries
    ``choreo-needs-human: true``. Earlier ``choreo-dlq-*`` headers (a dead letter that
    was replayed and failed again) are replaced.
    """
    message = f"{reason.value}: {error}" if error is not None else reason.value
    headers = [(name, value) for name, value in record.headers if name not in _DLQ_HEADERS]
    headers += [
        (Header.DLQ_REASON, message[:_MAX_REASON].encode("utf-8", "replace")),
        (Header.DLQ_ERROR_CLASS, _error_class(error).encode()),
        (Header.DLQ_SOURCE_TOPIC, record.topic.encode()),
        (Header.DLQ_SOURCE_PARTITION, str(record.partition).encode()),
        (Header.DLQ_SOURCE_OFFSET, str(record.offset).encode()),
        (Header.DLQ_SERVICE, service.encode()),
        (Header.DLQ_FAILED_AT, str(failed_at_ms).encode()),
        (Header.DLQ_ATTEMPTS, str(attempts).encode()),
    ]
    if reason is DeadLetterReason.COMPENSATION_EXHAUSTED:
        headers.append((Header.NEEDS_HUMAN, b"true"))
    return OutboxRecord(dead_letter_id(record), topic, record.key, record.value, headers)


def _error_class(error: BaseException | None) -> str:
    """Return the qualified class name of ``error`` (empty when there is none)."""
    if error is None:
        return ""
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered record read back: the original record and why it was given up."""

    record: Record
    reason: DeadLetterReason | None
    message: str
    error_class: str
    source_topic: str
    source_partition: int
    source_offset: int
    service: str
    failed_at_ms: int
    attempts: int
    needs_human: bool

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        """Return the dead letter carried by a record of a dead-letter topic."""
        headers: Mapping[str, bytes] = headers_to_dict(record.headers)

        def text(name: str) -> str:
            return headers.get(name, b"").decode("utf-8", "replace")

        def number(name: str) -> int:
            try:
                return int(text(name))
            except ValueError:
                return -1

        message = text(Header.DLQ_REASON)
        code = message.split(":", 1)[0]
        try:
            reason: DeadLetterReason | None = DeadLetterReason(code)
        except ValueError:
            reason = None
        return cls(
            record=record,
            reason=reason,
            message=message,
            error_class=text(Header.DLQ_ERROR_CLASS),
            source_topic=text(Header.DLQ_SOURCE_TOPIC),
            source_partition=number(Header.DLQ_SOURCE_PARTITION),
            source_offset=number(Header.DLQ_SOURCE_OFFSET),
            service=text(Header.DLQ_SERVICE),
            failed_at_ms=number(Header.DLQ_FAILED_AT),
            attempts=number(Header.DLQ_ATTEMPTS),
            needs_human=text(Header.NEEDS_HUMAN) == "true",
        )

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """Return the record's headers without the ones the dead-lettering added."""
        return [(n, v) for n, v in self.record.headers if n not in _DLQ_HEADERS]
