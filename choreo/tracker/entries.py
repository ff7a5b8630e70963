"""One saga as the tracker keeps it: in full (its events and last trace), or packed.

A full :class:`Entry` holds the saga's events by id, its last trace and a summary of it
(state, status, times, flags). A *packed* saga is one ``bytes`` value: its summary in a
fixed-size head (:func:`pack_saga`) followed by its events packed by
:mod:`choreo.tracker.compact`, or by nothing once the checkpoint store holds them. Bytes
hold no references, so the dict of packed sagas is never walked by the garbage collector,
and a packed saga costs one object instead of a tuple, its numbers and its events.
:func:`filing_of` and :func:`packed_filing` say where either form is filed in the saga
index (:mod:`choreo.tracker.index`); both forms of one summary are filed alike.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from choreo.tracker.compact import Symbols
from choreo.tracker.index import Filing
from choreo.tracker.model import SagaState, SagaStatus, SagaTrace, TraceEvent

__all__ = [
    "Entry",
    "Summary",
    "filing_of",
    "pack_saga",
    "packed_events",
    "packed_filing",
    "restamp",
    "summary_of",
    "without_events",
]

STATES: Final = tuple(SagaState)
STATE_INDEX: Final = {state: index for index, state in enumerate(STATES)}
STATUSES: Final = tuple(SagaStatus)
STATUS_INDEX: Final = {status: index for index, status in enumerate(STATUSES)}
TERMINAL_STATES: Final = frozenset((SagaState.COMPLETED, SagaState.FAILED))
FORWARD_STATES: Final = frozenset((SagaState.STARTED, SagaState.PENDING))
_FORWARD_INDEXES: Final = frozenset(STATE_INDEX[state] for state in FORWARD_STATES)
_TERMINAL_INDEXES: Final = frozenset(STATE_INDEX[state] for state in TERMINAL_STATES)

FLAG_STUCK: Final = 1
FLAG_COMPENSATION_FAILED: Final = 2
FLAG_TIMED_OUT: Final = 4
SAVED_FLAGS: Final = FLAG_STUCK | FLAG_COMPENSATION_FAILED | FLAG_TIMED_OUT
"""The flags the checkpoint store keeps; the others only describe the packed head."""
_HAS_STARTED: Final = 8
_HAS_ENDED: Final = 16
_HAS_DEADLINE: Final = 32
_STORED: Final = 64  # the events are in the checkpoint store, not after the head

# saga name (a symbol), state, status, flags, started at, ended at, deadline, event count
_HEAD: Final = struct.Struct("<IBBBqqqI")
_STATUS_AT: Final = 5  # the byte offsets of the status and the flags in the head
_FLAGS_AT: Final = 6


class Summary(NamedTuple):
    """A packed saga's summary (what its head holds)."""

    saga: str
    state: SagaState
    status: SagaStatus
    flags: int
    started_at_ms: int | None
    ended_at_ms: int | None
    deadline_ms: int | None
    event_count: int


class Entry:
    """One saga in full: its events, its last trace (None while stale) and its summary."""

    __slots__ = (
        "blob",
        "cid",
        "compensation_failed",
        "deadline_ms",
        "ended",
        "ended_at_ms",
        "event_count",
        "events",
        "packed_away",
        "saga",
        "started_at_ms",
        "state",
        "status",
        "stuck",
        "timed_out",
        "trace",
    )

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.saga = ""
        self.events: dict[str, TraceEvent] = {}
        self.ended = False
        """True once a completed or failed event is among the events."""
        self.packed_away = False
        """True once the tracker replaced this entry by its packed form."""
        self.trace: SagaTrace | None = None
        self.blob: bytes | None = None
        """The trace's events already packed (for a finished saga), reused when it is packed."""
        self.state = SagaState.STARTED
        self.status = SagaStatus.STARTED
        self.started_at_ms: int | None = None
        self.ended_at_ms: int | None = None
        self.deadline_ms: int | None = None
        self.stuck = False
        self.compensation_failed = False
        self.timed_out = False
        self.event_count = 0

    @classmethod
    def from_summary(cls, cid: str, summary: Summary) -> Entry:
        """Return an entry (without events yet) carrying a packed saga's summary."""
        entry = cls(cid)
        flags = summary.flags
        entry.saga, entry.state, entry.status = summary.saga, summary.state, summary.status
        entry.started_at_ms, entry.ended_at_ms = summary.started_at_ms, summary.ended_at_ms
        entry.deadline_ms, entry.event_count = summary.deadline_ms, summary.event_count
        entry.stuck = bool(flags & FLAG_STUCK)
        entry.compensation_failed = bool(flags & FLAG_COMPENSATION_FAILED)
        entry.timed_out = bool(flags & FLAG_TIMED_OUT)
        return entry

    @property
    def flags(self) -> int:
        """Return the stuck, compensation-failed and timed-out marks as bit flags."""
        return (
            (FLAG_STUCK if self.stuck else 0)
            | (FLAG_COMPENSATION_FAILED if self.compensation_failed else 0)
            | (FLAG_TIMED_OUT if self.timed_out else 0)
        )

    def summary(self) -> Summary:
        """Return this entry's summary."""
        return Summary(
            self.saga,
            self.state,
            self.status,
            self.flags,
            self.started_at_ms,
            self.ended_at_ms,
            self.deadline_ms,
            self.event_count,
        )


def pack_saga(summary: Summary, events: bytes | None, symbols: Symbols) -> bytes:
    """Return a packed saga: the summary's head, then ``events`` (None: in the store).

    Raises :class:`struct.error` when a time does not fit 64 bits.
    """
    saga, state, status, flags, started, ended, deadline, count = summary
    flags = (
        (flags & SAVED_FLAGS)
        | (0 if started is None else _HAS_STARTED)
        | (0 if ended is None else _HAS_ENDED)
        | (0 if deadline is None else _HAS_DEADLINE)
        | (_STORED if events is None else 0)
    )
    head = _HEAD.pack(
        symbols.number(saga),
        STATE_INDEX[state],
        STATUS_INDEX[status],
        flags,
        started or 0,
        ended or 0,
        deadline or 0,
        count,
    )
    return head if events is None else head + events


def summary_of(packed: bytes, symbols: Symbols) -> Summary:
    """Return the summary in a packed saga's head."""
    saga, state, status, flags, started, ended, deadline, count = _HEAD.unpack_from(packed)
    return Summary(
        symbols.texts[saga],
        STATES[state],
        STATUSES[status],
        flags & SAVED_FLAGS,
        started if flags & _HAS_STARTED else None,
        ended if flags & _HAS_ENDED else None,
        deadline if flags & _HAS_DEADLINE else None,
        count,
    )


def packed_events(packed: bytes) -> bytes | None:
    """Return a packed saga's packed events, or None when the checkpoint store holds them."""
    if packed[_FLAGS_AT] & _STORED:
        return None
    return packed[_HEAD.size :]


def without_events(packed: bytes) -> bytes:
    """Return a packed saga without its events (saved in the checkpoint store)."""
    head = bytearray(packed[: _HEAD.size])
    head[_FLAGS_AT] |= _STORED
    return bytes(head)


def restamp(packed: bytes, status: SagaStatus, flags: int) -> bytes:
    """Return a packed saga with another status and saved flags (its events unchanged)."""
    head = bytearray(packed[: _HEAD.size])
    head[_STATUS_AT] = STATUS_INDEX[status]
    head[_FLAGS_AT] = (head[_FLAGS_AT] & ~SAVED_FLAGS) | (flags & SAVED_FLAGS)
    return bytes(head) + packed[_HEAD.size :]


def filing_of(entry: Entry) -> Filing:
    """Return where a full saga belongs in the saga index."""
    deadline = entry.deadline_ms
    running = deadline is not None and entry.state not in TERMINAL_STATES
    started = entry.started_at_ms
    return (
        -1 if started is None else started,
        entry.status,
        entry.saga,
        entry.stuck,
        deadline if running and not entry.stuck else None,
        deadline if running and entry.state in FORWARD_STATES and not entry.timed_out
        else None,
    )


def packed_filing(packed: bytes, texts: list[str]) -> Filing:
    """Return where a packed saga belongs in the saga index (``texts``: the symbols)."""
    saga, state, status, flags, started, _, deadline, _ = _HEAD.unpack_from(packed)
    stuck = bool(flags & FLAG_STUCK)
    running = state not in _TERMINAL_INDEXES and flags & _HAS_DEADLINE
    return (
        started if flags & _HAS_STARTED else -1,
        STATUSES[status],
        texts[saga],
        stuck,
        deadline if running and not stuck else None,
        deadline if running and state in _FORWARD_INDEXES and not flags & FLAG_TIMED_OUT
        else None,
    )
