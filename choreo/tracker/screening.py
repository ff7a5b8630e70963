"""What a tracker does with a record that is not a plain event.

A record without choreo headers is ignored, one with a broken envelope or a payload that
cannot be the event its headers name is unreadable (counted by reason), and a dead
letter is noted on its saga's timeline; one asking for a human marks the saga
compensation-failed. See :mod:`choreo.tracker.accounting` for the rules.
"""

from __future__ import annotations

import contextlib
from typing import Final

from choreo.errors import TransportError
from choreo.model.envelope import Header
from choreo.safety.text import printable
from choreo.tracker.accounting import (
    MAX_HEADER_BYTES,
    dead_letter_note,
    header_problem,
    unreadable_reason,
)
from choreo.tracker.entries import (
    FLAG_COMPENSATION_FAILED,
    Entry,
    summary_of,
)
from choreo.tracker.keeping import SagaKeeping, logger
from choreo.tracker.model import DeadLetterNote
from choreo.transports.base import Record

_CID: Final = Header.CORRELATION_ID
_TYPE: Final = Header.EVENT_TYPE
_SAGA: Final = Header.SAGA
_NEEDS_HUMAN: Final = Header.NEEDS_HUMAN
_DLQ_REASON: Final = Header.DLQ_REASON
_FALSE: Final = (b"false", b"0", b"no")
_MAX_ID: Final = MAX_HEADER_BYTES
_MAX_NOTED_SAGAS: Final = 10_000
"""Sagas whose dead letters are kept for their timelines (the oldest noted is dropped)."""
_MAX_NOTES: Final = 50
"""Dead letters kept per saga."""

class RecordScreening(SagaKeeping):
    """Accounts for the records a tracker cannot fold as events, and notes dead letters."""

    def _set_aside(
        self, record: Record, headers: dict[str, bytes], dirty: dict[str, Entry]
    ) -> bool:
        """Account for a record that is not a plain event; return True when it is not one.

        A record without a correlation id is ignored (no choreo headers) or unreadable (a
        null one); repeated or null choreo headers make it unreadable; a dead letter is
        noted on its saga. Returns False when only headers of other names repeat or are
        null: the record is then read as an event.
        """
        cid_raw = headers.get(_CID)
        if cid_raw is None:
            if _CID in headers:
                self.stats.unreadable(f"null header {_CID}")
            else:
                self.stats.ignored += 1
            return True
        problem = header_problem(record.headers)
        if problem is not None:
            self.stats.unreadable(problem)
            return True
        if _DLQ_REASON in headers or _NEEDS_HUMAN in headers:
            self._dead_letter(headers, cid_raw, record, dirty)
            return True
        return False

    def _unreadable(self, record: Record, headers: dict[str, bytes]) -> None:
        """Count (and log at debug level) a record whose envelope is not valid, by reason."""
        reason = unreadable_reason(headers)
        self.stats.unreadable(reason)
        logger.debug(
            "record %s/%d@%d is unreadable: %s",
            printable(record.topic, 200), record.partition, record.offset, reason,
        )

    def _bad_payload(self, event_type: str, value: bytes | None) -> bool:
        """Count a record whose payload cannot be the event its headers name; return True."""
        problem = self._payload_problem(event_type, value)
        if problem is not None:
            self.stats.unreadable(problem)
        return problem is not None

    def _payload_problem(self, event_type: str, value: bytes | None) -> str | None:
        """Return why a payload cannot be the event its headers announce, or None."""
        if value is None:
            return "no payload"
        if self.decode is None or not self.check_payloads:
            return None
        try:
            decoded = self.decode(value)
        except TransportError as exc:  # the registry is down: the payload cannot be judged
            logger.warning("cannot check a payload (the record is kept): %s", exc)
            return None
        except Exception:
            return "payload does not decode"
        named = decoded[0] if isinstance(decoded, tuple) and len(decoded) == 2 else None
        if isinstance(named, str) and named != event_type:
            return f"payload type differs from header {_TYPE}"
        return None

    def _dead_letter(
        self, headers: dict[str, bytes], cid_raw: bytes, record: Record, dirty: dict[str, Entry]
    ) -> None:
        """Note a dead-letter record on its saga's timeline; one asking for a human marks
        the saga (put in dirty)."""
        try:
            cid = cid_raw.decode("utf-8") if 0 < len(cid_raw) <= _MAX_ID else ""
        except UnicodeDecodeError:
            cid = ""
        if not cid:
            self.stats.unreadable(f"dead letter without a valid {_CID}")
            return
        self.stats.dead_letters += 1
        notes = self._notes.get(cid)
        if notes is None:
            notes = self._notes[cid] = []
            if len(self._notes) > _MAX_NOTED_SAGAS:
                self._notes.popitem(last=False)
        if len(notes) < _MAX_NOTES:
            notes.append(dead_letter_note(headers, record))
        self._noted = True
        marked = self._mark_needs_human(headers, cid)
        if marked is not None:
            dirty[marked.cid] = marked

    def dead_letters(self, correlation_id: str) -> list[DeadLetterNote]:
        """Return the dead letters noted for a saga, in the order they were read."""
        with self._cond:
            return list(self._notes.get(correlation_id, ()))

    def _mark_needs_human(self, headers: dict[str, bytes], cid: str) -> Entry | None:
        """Mark the saga of a record asking for a human compensation-failed; return it.

        None when the record does not ask (``needs-human`` false) or the saga was
        already marked.
        """
        flag = headers.get(_NEEDS_HUMAN)
        if flag is None or flag.strip().lower() in _FALSE:
            return None
        entry = self._full.get(cid)
        packed = self._packed.get(cid) if entry is None else None
        if packed is not None:
            if summary_of(packed, self.symbols).flags & FLAG_COMPENSATION_FAILED:
                return None
            entry = self._expand(cid, packed)
        elif entry is None:
            entry = self._new_entry(cid)
            saga = headers.get(_SAGA)
            if saga and len(saga) <= _MAX_ID:
                with contextlib.suppress(UnicodeDecodeError):
                    self._retype(entry, self._decode(saga))
        elif entry.compensation_failed:
            return None
        entry.compensation_failed = True
        return entry
