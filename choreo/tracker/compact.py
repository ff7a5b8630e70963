"""A finished saga's events packed into a few hundred bytes, losslessly (payloads aside).

Event types, services, steps and topics are numbers in a :class:`Symbols` table shared by
every saga of a tracker (and saved with the checkpoint). The packed form is one marker
byte, then per event, in causal order, one fixed-size row written by a single ``struct``
call (the cause as the index of an earlier event of the saga, the event id's length, the
symbols, role, partition, offset and produced-at time), the event id and, only for a cause
from outside the saga, its length and text. While the symbol table has fewer than 65,535
entries symbols take 2 bytes (marker ``0xF5``), else 4 (``0xF6``). An event id in the
canonical UUID form (36 lower-case characters, what choreo gives its events) is stored as
its 16 bytes (id length :data:`_UUID_ID`) when every id of the saga is one, else every id
in UTF-8: a UUID-identified event packs into 49 bytes.

The first forms (markers ``0xF2``/``0xF3``: every id in UTF-8 after a 4-byte length, 71
bytes per UUID-identified event) are still read, so a checkpoint written by an earlier
version loads. A tracker writes them only inside standalone blobs (below), which instances
of an earlier version read from the summary topic during a rolling upgrade; an earlier
version cannot read the new forms from a checkpoint (it keeps those sagas' summaries and
logs that their events are unreadable), so a checkpoint does not survive a downgrade.

Unpacking gives back exactly the events that were packed, so a compacted saga can be
folded again when a late event arrives, and shown in full by ``choreo trace``.

A *standalone* blob (:func:`pack_standalone`, marker ``0xF4``) carries its own symbol
table before the packed events, so it can be unpacked by a process that never saw the
packing tracker's table: the saga summaries that tracker instances materialize to a
topic (:mod:`choreo.tracker.summaries`) carry their events this way. Such bytes come from
a topic anyone may write to, so :func:`unpack_events` bounds every count and length
they claim and raises :class:`ValueError` (or :class:`IndexError`, :class:`struct.error`)
on anything it did not write.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable, Sequence
from typing import Final

from choreo.model.envelope import Role
from choreo.tracker.model import TraceEvent

__all__ = ["MAX_SYMBOL_BYTES", "Symbols", "pack_events", "pack_standalone", "unpack_events"]

_ROLES: Final = tuple(Role)
_ROLE_INDEX: Final = {role: index for index, role in enumerate(_ROLES)}

_NARROW: Final = 0xF2  # the first forms, read only (ids in UTF-8)
_WIDE: Final = 0xF3
_STANDALONE: Final = 0xF4
_UUID_NARROW: Final = 0xF5  # the forms written: canonical UUID ids in 16 bytes
_UUID_WIDE: Final = 0xF6
MAX_SYMBOL_BYTES: Final = 1024
"""The longest symbol text a standalone blob may carry (a choreo header's bound)."""
_COUNT: Final = struct.Struct("<H")
# cause (index, or one of the two markers), id length, type, service, step and topic
# symbols, role, partition, offset, produced-at
_ROWS: Final = {
    _NARROW: struct.Struct("<HIHHHHBiqq"),
    _WIDE: struct.Struct("<HIIIIIBiqq"),
    _UUID_NARROW: struct.Struct("<HHHHHHBiqq"),
    _UUID_WIDE: struct.Struct("<HHIIIIBiqq"),
}
_NO_STEP: Final = {_NARROW: 0xFFFF, _WIDE: 0xFFFFFFFF, _UUID_NARROW: 0xFFFF,
                   _UUID_WIDE: 0xFFFFFFFF}
_WRITTEN: Final = {_NARROW: _UUID_NARROW, _WIDE: _UUID_WIDE}
"""The form :func:`pack_events` writes for each symbol width."""
_UUID_ID: Final = 0xFFFF
"""The id length of an event id stored as a UUID's 16 bytes (a real length is at most
:data:`MAX_SYMBOL_BYTES`)."""
_NO_CAUSE: Final = 0xFFFF
_CAUSE_TEXT: Final = 0xFFFE  # the cause is not an event of the saga: its text follows
_LEN: Final = struct.Struct("<I")
_ATTRS: Final = operator.attrgetter(
    "event_id", "causation_id", "event_type", "service", "step", "topic", "role", "partition",
    "offset", "produced_at_ms",
)


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


def pack_events(
    events: Sequence[TraceEvent], symbols: Symbols, *, uuid_ids: bool = True
) -> bytes:
    """Return ``events`` packed into bytes (``late`` is not kept: the fold recomputes it).

    ``uuid_ids=False`` writes the first form (every id in UTF-8), which earlier versions read.

    Raises :class:`struct.error` when a number does not fit its field (a partition beyond
    32 bits, an offset or time beyond 64 bits).
    """
    # a saga adds at most four symbols per event: the form is decided before numbering them
    form = _NARROW if len(symbols) + 4 * len(events) < _NO_STEP[_NARROW] else _WIDE
    if uuid_ids:
        form = _WRITTEN[form]
    out = [bytes((form,))]
    add = out.append
    row = _ROWS[form].pack
    no_step = _NO_STEP[form]
    position: dict[str, int] = {}
    known = symbols._index
    role_index = _ROLE_INDEX
    # a saga's ids are stored as UUIDs when every one is (else all as text)
    block = _uuid_block([event.event_id for event in events]) if uuid_ids else None
    for index, (event_id, cause, event_type, service, step, topic, role, partition, offset,
                produced) in enumerate(map(_ATTRS, events)):
        if block is not None:
            raw_id = block[16 * index : 16 * index + 16]
            id_length = _UUID_ID
        else:
            raw_id = event_id.encode("utf-8")
            id_length = len(raw_id)
            if id_length >= _UUID_ID and uuid_ids:
                raise struct.error("an event id longer than the packed form allows")
        ref = _NO_CAUSE if cause is None else position.get(cause, _CAUSE_TEXT)
        role_number = role_index[role]
        while True:  # twice at most: the second time every text has its number
            try:
                add(
                    row(
                        ref,
                        id_length,
                        known[event_type],
                        known[service],
                        no_step if step is None else known[step],
                        known[topic],
                        role_number,
                        partition,
                        offset,
                        produced,
                    )
                )
                break
            except KeyError:  # a text the table has not numbered yet
                for text in (event_type, service, topic, step):
                    if text is not None:
                        symbols.number(text)
        add(raw_id)
        if ref == _CAUSE_TEXT:
            raw_cause = cause.encode("utf-8")
            add(_LEN.pack(len(raw_cause)))
            add(raw_cause)
        if index < _CAUSE_TEXT:
            position.setdefault(event_id, index)
    return b"".join(out)


def _uuid_block(ids: Sequence[str]) -> bytes | None:
    """Return the 16 bytes of every id in turn when each is a canonical UUID (36 characters,
    lower-case hexadecimal, hyphens at 8, 13, 18 and 23); None otherwise.

    One pass over the ids joined (a saga's ids are checked together: ~0.4 µs per id, where
    one check per id costs ~1 µs). ``g`` joins them: not a hex digit, so exactly ``n`` of
    them, each at the end of its 37-character block, means every id has 36 characters.
    """
    count = len(ids)
    text = "g".join(ids) + "g"
    dashes = "-" * count
    if (
        len(text) != 37 * count
        or text[36::37] != "g" * count
        or text.count("g") != count
        or text[8::37] != dashes
        or text[13::37] != dashes
        or text[18::37] != dashes
        or text[23::37] != dashes
        or not text.islower()  # no upper-case hex digit
    ):
        return None
    digits = text.replace("-", "").replace("g", "")
    if len(digits) != 32 * count:  # a hyphen elsewhere
        return None
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return raw if len(raw) == 16 * count else None  # fromhex skips whitespace


def _read_id(data: bytes, at: int, length: int, as_uuid: bool) -> tuple[str, int]:
    """Return the event id of ``length`` bytes at ``at`` (a UUID's 16 bytes, or UTF-8), and
    where the row goes on."""
    if length > MAX_SYMBOL_BYTES or at + length > len(data):
        raise ValueError("an event id too long or cut short")
    raw = data[at : at + length]
    return (_uuid_text(raw) if as_uuid else raw.decode("utf-8")), at + length


def _uuid_text(raw: bytes) -> str:
    """Return the canonical text of a UUID's 16 bytes (inverse of :func:`_uuid_bytes`)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def pack_standalone(events: Sequence[TraceEvent]) -> bytes:
    """Return ``events`` packed with their own symbol table (see the module docstring).

    Raises :class:`struct.error` when a number does not fit its field, and
    :class:`ValueError` when a text is longer than :data:`MAX_SYMBOL_BYTES` or the saga
    has more than 65,535 distinct texts.
    """
    if 8 * len(events) >= _NO_STEP[_NARROW]:  # a huge saga: the general packer decides
        local = Symbols()
        for event in events:
            for text in (event.event_type, event.service, event.topic, event.step):
                if text is not None:
                    local.number(text)
        return _standalone(local.texts, pack_events(events, local, uuid_ids=False))
    # The first forms only: instances of an earlier version read these blobs from the
    # summary topic during a rolling upgrade.
    # the texts are numbered as met (type, service, topic, step of each event in turn),
    # so the table has at most 4 per event and the narrow form always fits
    numbers: dict[str, int] = {}
    texts: list[str] = []
    rows = [bytes((_NARROW,))]
    add = rows.append
    row = _ROWS[_NARROW].pack
    position: dict[str, int] = {}
    role_index = _ROLE_INDEX
    for index, (event_id, event_type, role, service, produced, cause, step, topic, partition,
                offset, _late) in enumerate(events):
        numbered = []
        for text in (event_type, service, topic, step):
            if text is None:
                numbered.append(_NO_STEP[_NARROW])
                continue
            number = numbers.get(text)
            if number is None:
                number = numbers[text] = len(texts)
                texts.append(text)
            numbered.append(number)
        raw_id = event_id.encode("utf-8")
        ref = _NO_CAUSE if cause is None else position.get(cause, _CAUSE_TEXT)
        type_n, service_n, topic_n, step_n = numbered
        add(row(ref, len(raw_id), type_n, service_n, step_n, topic_n, role_index[role],
                partition, offset, produced))
        add(raw_id)
        if ref == _CAUSE_TEXT and cause is not None:
            raw_cause = cause.encode("utf-8")
            add(_LEN.pack(len(raw_cause)))
            add(raw_cause)
        if index < _CAUSE_TEXT:
            position.setdefault(event_id, index)
    return _standalone(texts, b"".join(rows))


def _standalone(texts: list[str], packed: bytes) -> bytes:
    """Return a standalone blob: the symbol table ``texts``, then the ``packed`` events."""
    if len(texts) > 0xFFFF:
        raise ValueError("a standalone blob holds at most 65535 symbols")
    out = [bytes((_STANDALONE,)), _COUNT.pack(len(texts))]
    for text in texts:
        raw = text.encode("utf-8")
        if len(raw) > MAX_SYMBOL_BYTES:
            raise ValueError(f"a symbol longer than {MAX_SYMBOL_BYTES} bytes")
        out.append(_COUNT.pack(len(raw)))
        out.append(raw)
    out.append(packed)
    return b"".join(out)


def _standalone_symbols(data: bytes) -> tuple[Symbols, int]:
    """Return the symbol table at the start of a standalone blob and where its events begin."""
    (count,) = _COUNT.unpack_from(data, 1)
    at = 1 + _COUNT.size
    texts: list[str] = []
    for _ in range(count):
        (length,) = _COUNT.unpack_from(data, at)
        at += _COUNT.size
        if length > MAX_SYMBOL_BYTES or at + length > len(data):
            raise ValueError("a standalone symbol is too long or cut short")
        texts.append(data[at : at + length].decode("utf-8"))
        at += length
    table = Symbols()
    table.texts = texts  # duplicates allowed: only the numbers matter for unpacking
    return table, at


def unpack_events(data: bytes, symbols: Symbols) -> list[TraceEvent]:
    """Return the events packed by :func:`pack_events` with the same symbol table.

    A standalone blob (:func:`pack_standalone`) is unpacked with its own table and
    ``symbols`` is not used. Raises :class:`ValueError` for bytes this version did not
    pack (or :class:`IndexError`, :class:`struct.error` for a blob cut short or
    naming a symbol, role or cause that does not exist).
    """
    if not data:
        return []
    if data[0] == _STANDALONE:
        symbols, at = _standalone_symbols(data)
        data = data[at:]
        if not data:
            return []
        if data[0] == _STANDALONE:
            raise ValueError("a standalone blob inside a standalone blob")
    form = data[0]
    row = _ROWS.get(form)
    if row is None:
        raise ValueError(f"not a packed saga (marker byte {form:#x})")
    unpack_row = row.unpack_from
    size = row.size
    no_step = _NO_STEP[form]
    uuid_id = _UUID_ID if form in (_UUID_NARROW, _UUID_WIDE) else -1
    texts = symbols.texts
    roles = _ROLES
    make = tuple.__new__
    events: list[TraceEvent] = []
    ids: list[str] = []
    at, end = 1, len(data)
    while at < end:
        ref, id_length, etype, service, step, topic, role, partition, offset, produced = (
            unpack_row(data, at)
        )
        at += size
        event_id, at = _read_id(data, at, 16 if id_length == uuid_id else id_length,
                                id_length == uuid_id)
        if ref == _NO_CAUSE:
            cause = None
        elif ref == _CAUSE_TEXT:
            (length,) = _LEN.unpack_from(data, at)
            at += _LEN.size
            if length > MAX_SYMBOL_BYTES or at + length > end:
                raise ValueError("a cause id too long or cut short")
            cause = data[at : at + length].decode("utf-8")
            at += length
        else:
            cause = ids[ref]
        ids.append(event_id)
        events.append(
            make(
                TraceEvent,
                (
                    event_id,
                    texts[etype],
                    roles[role],
                    texts[service],
                    produced,
                    cause,
                    None if step == no_step else texts[step],
                    texts[topic],
                    partition,
                    offset,
                    False,
                ),
            )
        )
    return events
