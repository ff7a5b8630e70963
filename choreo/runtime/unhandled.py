"""Records the dispatcher cannot hand to a handler: a broken envelope, an unknown event type,
a payload that does not decode, an event of a type this service does not handle.

:class:`UnhandledRecords` is the part of :class:`~choreo.runtime.dispatch.Dispatcher`
that deals with them: each is dead-lettered once with its reason (its dead-letter id
recorded in the inbox, so a redelivery is not dead-lettered again), or skipped when it
is simply not this service's. :func:`inbox_key` is the key a record is deduplicated
under.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from choreo.errors import EnvelopeError, UnknownEventError
from choreo.model.envelope import HEADER_PREFIX, Header
from choreo.model.events import Event
from choreo.runtime.batch_output import BatchOutput
from choreo.runtime.deadletter import DeadLetterReason, dead_letter_id
from choreo.runtime.routing import Fields, check_envelope, fields_from
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record

Item = tuple[Record, Fields]  # a record and its envelope (as choreo.runtime.invoke's)


class DeadLetters(Protocol):
    """What dead-letters a record (the dispatcher's :class:`~choreo.runtime.invoke.Invoker`)."""

    def dead_letter(
        self, record: Record, reason: DeadLetterReason, error: BaseException | None, attempts: int
    ) -> OutboxRecord:
        """Return the dead letter of ``record``."""
        ...


__all__ = ["UnhandledRecords", "inbox_key"]

logger = logging.getLogger("choreo.runtime.worker")

_ID = Header.EVENT_ID


class UnhandledRecords:
    """Dead-letters (once) or skips the records no handler of the service can take.

    Mixed into the dispatcher, whose ``decode`` and ``invoker`` it uses.
    """

    decode: Callable[[str, bytes], Event]
    invoker: DeadLetters

    def _undecodable(
        self, record: Record, key: str, error: Exception, seen: set[str], output: BatchOutput
    ) -> OutboxRecord | None:
        """Dead-letter a record whose payload did not decode (or whose type is unknown)."""
        reason = (
            DeadLetterReason.UNKNOWN_EVENT_TYPE
            if isinstance(error, UnknownEventError)
            else DeadLetterReason.UNDECODABLE
        )
        return self._dead_letter_once(record, key, reason, error, seen=seen, output=output)

    def _read_fields(
        self, record: Record, key: str, seen: set[str], output: BatchOutput
    ) -> Fields | None:
        """Return the envelope of a record in an unusual layout, or dead-letter it (None)."""
        headers = dict(record.headers)
        try:
            fields = fields_from(headers)
            if fields[1] != key:
                raise EnvelopeError(f"header {_ID!r} is repeated with other values")
        except EnvelopeError as exc:
            self._dead_letter_once(
                record, key, DeadLetterReason.BAD_ENVELOPE, exc, seen=seen, output=output
            )
            return None
        return fields

    def _not_ours(self, item: Item, seen: set[str], output: BatchOutput) -> None:
        """Skip an event this service does not handle; dead-letter it if its type is unknown."""
        record, fields = item
        try:
            self.decode(fields[0], record.value or b"")
        except UnknownEventError as exc:
            self._dead_letter_once(
                record,
                fields[1],
                DeadLetterReason.UNKNOWN_EVENT_TYPE,
                exc,
                seen=seen,
                output=output,
            )
            return
        except Exception as exc:
            logger.debug("[%s %s] skipping unhandled, undecodable record: %s", *fields[:2], exc)
            return
        logger.debug("[%s %s] no handler here; skipped", *fields[:2])

    def _dead_letter_once(
        self,
        record: Record,
        inbox_id: str,
        reason: DeadLetterReason,
        error: BaseException | None,
        *,
        seen: set[str],
        output: BatchOutput,
    ) -> OutboxRecord | None:
        """Dead-letter ``record`` unless ``inbox_id`` was dead-lettered already."""
        if inbox_id in seen:
            return None
        seen.add(inbox_id)
        letter = self.invoker.dead_letter(record, reason, error, 0)
        output.ids.append(inbox_id)
        output.records.append(letter)
        return letter


def inbox_key(record: Record) -> str:
    """Return the key a record is deduplicated under: its event id, else its dead-letter id.

    Called for records :func:`scan_headers` could not read. Only a valid envelope (every
    choreo header present once, checked by :func:`check_envelope`) is deduplicated under
    its event id: garbage carrying a real event's id gets its dead-letter id, so it can
    never pre-empt the real event in the inbox.
    """
    headers = record.headers
    names = [name for name, _ in headers if name.startswith(HEADER_PREFIX)]
    if len(names) == len(set(names)):
        try:
            return check_envelope(dict(headers))[1]
        except EnvelopeError:
            pass
    return dead_letter_id(record)
