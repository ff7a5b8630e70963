"""A finished saga's events packed into a few hundred bytes, losslessly (payloads aside).

An event id takes its UTF-8 length plus 4 bytes; a causation id naming an earlier event
of the same saga takes 2 (its index); event types, services, steps and topics are numbers
in a :class:`Symbols` table shared by every saga of a tracker (and saved with the
checkpoint). A UUID-identified event packs into about 75 bytes.
Unpacking gives back exactly the events that were packed, so a compacted saga can be
folded again when a late event arrives, and shown in full by ``choreo trace``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final

from choreo.envelope import Role
from choreo.tracker.model import TraceEvent

__all__ = ["Symbols", "pack_events", "unpack_events"]

_ROLES: Final = tuple(Role)
_ROLE_INDEX: Final = {role: index for index, role in enumerate(_ROLES)}
_NONE: Final = 0xFFFFFFFF

# the head byte of an event: how its cause is kept
_NO_CAUSE_FLAG: Final = 0
_CAUSE_REF: Final = 1
_CAUSE_TEXT: Final = 2
_NO_CAUSE: Final = bytes([_NO_CAUSE_FLAG])
_CAUSE_REF_HEAD: Final = bytes([_CAUSE_REF])
_CAUSE_TEXT_HEAD: Final = bytes([_CAUSE_TEXT])

# type, service, step, topic symbols; role; partition; offset; produced-at
_BODY: Final = struct.Struct("<IIIIBiqq")
_REF: Final = struct.Struct("<H")
_LEN: Final = struct.Struct("<I")
_MAX_REF: Final = 0xFFFF


class Symbols:
    """An append-only table of strings numbered from 0 (types, services, steps, topics)."""

    __slots__ = ("_index", "texts")

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self.texts: list[str] = []
        self._index: dict[str, int] = {}
        for text in texts:
            self.number(text)

    def __len__(self) -> int:
        return len(self.texts)

    def number(self, text: str) -> int:
        """Return the number of ``text``, adding it when it is new."""
        found = self._index.get(text)
        if found is None:
            found = self._index[text] = len(self.texts)
            self.texts.append(text)
        return found

    def intern(self, text: str) -> str:
        """Return the table's copy of ``text`` (one string object per distinct text)."""
        return self.texts[self.number(text)]


def pack_events(events: Sequence[TraceEvent], symbols: Symbols) -> bytes:
    """Return ``events`` packed into bytes (``late`` is not kept: the fold recomputes it)."""
    out = bytearray()
    position: dict[str, int] = {}
    known = symbols._index
    body = _BODY.pack
    length = _LEN.pack
    for index, event in enumerate(events):
        event_id = event.event_id
        raw_id = event_id.encode("utf-8")
        cause = event.causation_id
        if cause is None:
            out += _NO_CAUSE
        else:
            cause_ref = position.get(cause)
            if cause_ref is not None and cause_ref <= _MAX_REF:
                out += _CAUSE_REF_HEAD
                out += _REF.pack(cause_ref)
            else:
                raw_cause = cause.encode("utf-8")
                out += _CAUSE_TEXT_HEAD
                out += length(len(raw_cause))
                out += raw_cause
        out += length(len(raw_id))
        out += raw_id
        step = event.step
        try:
            numbers = (
                known[event.event_type],
                known[event.service],
                _NONE if step is None else known[step],
                known[event.topic],
            )
        except KeyError:
            number = symbols.number
            numbers = (
                number(event.event_type),
                number(event.service),
                _NONE if step is None else number(step),
                number(event.topic),
            )
        out += body(
            *numbers,
            _ROLE_INDEX[event.role],
            event.partition,
            event.offset,
            event.produced_at_ms,
        )
        if event_id not in position:
            position[event_id] = index
    return bytes(out)


def unpack_events(data: bytes, symbols: Symbols) -> list[TraceEvent]:
    """Return the events packed by :func:`pack_events` with the same symbol table."""
    texts = symbols.texts
    events: list[TraceEvent] = []
    ids: list[str] = []
    offset = 0
    view = memoryview(data)
    end = len(data)

    def text_at(at: int) -> tuple[str, int]:
        (size,) = _LEN.unpack_from(view, at)
        start = at + _LEN.size
        return str(view[start : start + size], "utf-8"), start + size

    while offset < end:
        flags = data[offset]
        offset += 1
        cause: str | None = None
        if flags == _CAUSE_REF:
            (ref,) = _REF.unpack_from(view, offset)
            cause = ids[ref]
            offset += _REF.size
        elif flags == _CAUSE_TEXT:
            cause, offset = text_at(offset)
        event_id, offset = text_at(offset)
        etype, service, step, topic, role, partition, record_offset, produced = (
            _BODY.unpack_from(view, offset)
        )
        offset += _BODY.size
        ids.append(event_id)
        events.append(
            TraceEvent(
                event_id=event_id,
                event_type=texts[etype],
                role=_ROLES[role],
                service=texts[service],
                produced_at_ms=produced,
                causation_id=cause,
                step=None if step == _NONE else texts[step],
                topic=texts[topic],
                partition=partition,
                offset=record_offset,
            )
        )
    return events
