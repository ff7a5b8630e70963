"""How a tracker keeps its sagas: full or packed, folded, summarised, filed and evicted.

:class:`SagaKeeping` is the part of :class:`~choreo.tracker.tracker.Tracker` that owns its
maps (declared here, set by ``Tracker.__init__``) and every operation on them that
feeding, reading, deadlines and the checkpoint share.

Memory stays bounded: a finished saga is kept in full only while it is among the
``keep_finished`` most recent ones; after that it is *packed*: replaced by one ``bytes``
value holding its summary and its events in a few hundred bytes (payloads dropped, see
:mod:`choreo.tracker.entries` and :mod:`choreo.tracker.compact`), unpacked again only to
be shown or when a late event arrives. At most ``max_open`` running sagas are kept in
full; the least recently active one beyond that is packed as well. With a ``checkpoint``
store, packed sagas live in the store once saved, and only their summaries stay in memory.
Full and packed sagas are kept in two maps; the packed one holds no references, so the
garbage collector never walks it.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final

from choreo.choreography.graph import Choreography
from choreo.model.envelope import Role
from choreo.tracker.compact import Symbols, pack_events, unpack_events
from choreo.tracker.entries import (
    FLAG_COMPENSATION_FAILED,
    FLAG_STUCK,
    TERMINAL_STATES,
    Entry,
    filing_of,
    pack_saga,
    packed_events,
    packed_filing,
    summary_of,
)
from choreo.tracker.fold import causal_order, fold
from choreo.tracker.graphfacts import GraphFacts
from choreo.tracker.index import Filing, SagaIndex
from choreo.tracker.model import DeadLetterNote, SagaState, SagaStatus, SagaTrace, TraceEvent
from choreo.tracker.stats import TrackerStats
from choreo.tracker.store import CheckpointStore
from choreo.transports.base import TopicPartition

# one logger for the whole tracker, under the name it had before the split
logger = logging.getLogger("choreo.tracker.tracker")

_TERMINAL_ROLES: Final = frozenset((Role.COMPLETED, Role.FAILED))
_CACHE_LIMIT: Final = 50_000
_STATUS_OF: Final = {state: SagaStatus(state.value) for state in SagaState}
_PLAIN: Final = frozenset({SagaStatus.STARTED, SagaStatus.PENDING, SagaStatus.COMPENSATING})

_Shape = tuple[bytes, bytes, bytes, bytes | None, bytes, str]
"""The raw type, role, service, step and saga header values of a record, and its topic."""
_Known = tuple[str, Role, str, str | None, str, str]
"""The same, decoded and interned."""

class SagaKeeping:
    """A tracker's sagas as kept: its maps, and folding, filing, packing and expanding.

    Every method expects the caller to hold ``self._cond``.
    """

    choreography: Choreography | None
    facts: GraphFacts | None
    default_deadline_ms: int
    clock: Callable[[], float]
    store: CheckpointStore | None
    max_open: int
    keep_finished: int
    decode: Callable[[bytes], Any] | None
    max_payloads: int
    check_payloads: bool
    stats: TrackerStats
    on_finished: Callable[[SagaTrace], None] | None
    symbols: Symbols
    version: int
    _cond: threading.Condition
    _full: dict[str, Entry]
    _packed: dict[str, bytes]
    _index: SagaIndex
    _open: OrderedDict[str, None]
    _finished: OrderedDict[str, None]
    _unsaved: set[str]
    _waiting: dict[str, Entry]
    """Running sagas fed but not re-folded yet (``feed_many(settle=False)``)."""
    _tracking: bool
    """True when changed sagas are noted in ``_unsaved`` (a checkpoint, or materializing)."""
    _counts: dict[SagaStatus, int]
    _types: dict[str, int]
    _offsets: dict[tuple[str, int], int]
    _resume: dict[TopicPartition, int]
    _saved_symbols: int
    _payloads: OrderedDict[tuple[str, str], bytes]
    _text: dict[bytes, str]
    _shapes: dict[_Shape, _Known]
    _notes: OrderedDict[str, list[DeadLetterNote]]
    _noted: bool

    def _entry_of(self, cid: str) -> Entry:
        """Return a saga's entry in full: the kept one, the packed one expanded, or a new one."""
        entry = self._full.get(cid)
        if entry is not None:
            return entry
        packed = self._packed.get(cid)
        return self._new_entry(cid) if packed is None else self._expand(cid, packed)

    def _new_entry(self, cid: str) -> Entry:
        entry = self._full[cid] = Entry(cid)
        self._counts[entry.status] += 1
        self._index.added(cid)
        return entry

    def _decode(self, raw: bytes) -> str:
        """Return the text of a low-cardinality header value (cached, one str per text)."""
        text = self._text.get(raw)
        if text is None:
            if len(self._text) >= _CACHE_LIMIT:
                self._text.clear()
            text = self._text[raw] = self.symbols.intern(raw.decode("utf-8"))
        return text

    def _retype(self, entry: Entry, saga: str) -> None:
        self._index.moving(entry.cid)
        if entry.saga:
            self._types[entry.saga] -= 1
        entry.saga = saga
        self._types[saga] = self._types.get(saga, 0) + 1

    def _refold(self, entry: Entry, *, new_event: bool) -> SagaTrace:
        """Fold an entry's events into a fresh trace and update its summary."""
        trace = fold(
            entry.cid,
            entry.events,
            saga=entry.saga,
            facts=self.facts,
            default_deadline_ms=self.default_deadline_ms,
            compensation_failed=entry.compensation_failed,
        )
        # stuck is cleared by an event that moves the deadline, kept otherwise
        if entry.stuck and (not new_event or trace.deadline_ms == entry.deadline_ms):
            trace.stuck = trace.state not in TERMINAL_STATES
        entry.trace = trace
        self._summarise(entry, trace)
        return trace

    def _summarise(self, entry: Entry, trace: SagaTrace) -> None:
        self._index.moving(entry.cid)
        old = entry.status
        state = trace.state
        events = trace.events
        entry.state = state
        entry.stuck = trace.stuck
        entry.timed_out = trace.timed_out
        entry.deadline_ms = trace.deadline_ms
        entry.started_at_ms = events[0].produced_at_ms if events else None
        ended = None
        if state in TERMINAL_STATES:
            for event in reversed(events):
                if event.role in _TERMINAL_ROLES:
                    ended = event.produced_at_ms
                    break
        if ended is not None and entry.ended_at_ms is None and self.on_finished is not None:
            self.on_finished(trace)
        entry.ended_at_ms = ended
        entry.event_count = len(events)
        if trace.compensation_failed:  # also told by the events (an orchestrator gave up)
            entry.compensation_failed = True
        if trace.violations:
            new = SagaStatus.VIOLATED
        elif trace.compensation_failed:
            new = SagaStatus.COMPENSATION_FAILED
        elif trace.stuck:
            new = SagaStatus.STUCK
        else:
            new = _STATUS_OF[state]
        entry.status = new
        if new is not old:
            counts = self._counts
            counts[old] -= 1
            counts[new] += 1
        if self._tracking:
            self._unsaved.add(entry.cid)

    def _settle(self, entry: Entry) -> None:
        """File a full-form entry as open or finished (most recent last)."""
        cid = entry.cid
        if entry.state in TERMINAL_STATES:
            self._open.pop(cid, None)
            self._finished[cid] = None
            self._finished.move_to_end(cid)
        else:
            self._finished.pop(cid, None)
            self._open[cid] = None
            self._open.move_to_end(cid)

    def _evict(self) -> None:
        """Pack the oldest finished sagas beyond ``keep_finished``, open beyond ``max_open``."""
        while len(self._finished) > self.keep_finished:
            cid, _ = self._finished.popitem(last=False)
            self._compact(cid)
        while len(self._open) > self.max_open:
            cid, _ = self._open.popitem(last=False)
            self._compact(cid)

    def _compact(self, cid: str) -> None:
        """Replace a full entry by its packed form (events packed, payloads dropped).

        A saga whose numbers do not fit the packed form (a time beyond 64 bits) stays full.
        """
        entry = self._full[cid]
        trace = entry.trace
        events = trace.events if trace is not None else causal_order(entry.events)
        blob = entry.blob if trace is not None else None
        if blob is None:
            blob = self._pack(cid, events)
            if blob is None:
                return
        try:
            packed = pack_saga(entry.summary(), blob, self.symbols)
        except struct.error as exc:
            logger.debug("saga %s stays unpacked: %s", cid, exc)
            return
        del self._full[cid]
        self._packed[cid] = packed
        entry.packed_away = True
        if self._payloads:
            for event in events:
                self._payloads.pop((cid, event.event_id), None)

    def _pack(self, cid: str, events: list[TraceEvent]) -> bytes | None:
        """Return a saga's events packed, or None when a number does not fit the packed form."""
        try:
            return pack_events(events, self.symbols)
        except struct.error as exc:
            logger.debug("saga %s stays unpacked: %s", cid, exc)
            return None

    def _unpacked(self, cid: str, blob: bytes | None) -> list[TraceEvent]:
        """Return a packed saga's events, from memory or from the store (none when lost)."""
        if blob is None:
            blob = self.store.events(cid) if self.store is not None else None
            if blob is None:
                logger.warning("saga %s lost its events (not in the store)", cid)
                return []
        try:
            return unpack_events(blob, self.symbols)
        except (ValueError, IndexError, struct.error) as exc:
            logger.warning("saga %s has unreadable packed events (another version?): %s", cid, exc)
            return []

    def _expand(self, cid: str, packed: bytes) -> Entry:
        """Bring a packed saga back to full form (re-folded and filed); return it."""
        entry = Entry.from_summary(cid, summary_of(packed, self.symbols))
        events = self._unpacked(cid, packed_events(packed))
        entry.events = {event.event_id: event for event in events}
        entry.ended = any(event.role in _TERMINAL_ROLES for event in events)
        del self._packed[cid]
        self._full[cid] = entry
        self._refold(entry, new_event=False)
        self._settle(entry)
        return entry

    def _changed(self) -> None:
        self.version += 1
        self._cond.notify_all()

    def _lookup(self, cid: str) -> Entry | bytes | None:
        """Return a saga as it is kept (full or packed), or None when it is unknown."""
        entry = self._full.get(cid)
        return entry if entry is not None else self._packed.get(cid)

    def _size(self) -> int:
        return len(self._full) + len(self._packed)

    def _filing(self, cid: str) -> Filing:
        """Return where a known saga belongs in the saga index."""
        entry = self._full.get(cid)
        if entry is not None:
            return filing_of(entry)
        return packed_filing(self._packed[cid], self.symbols.texts)

    def _filings(self) -> Iterator[tuple[str, Filing]]:
        """Yield every saga with where it belongs in the saga index."""
        for cid, entry in self._full.items():
            yield cid, filing_of(entry)
        texts = self.symbols.texts
        for cid, packed in self._packed.items():
            yield cid, packed_filing(packed, texts)

    def _trace_of(self, cid: str, entry: Entry | bytes) -> SagaTrace:
        """Return a saga's trace without changing how it is kept."""
        if isinstance(entry, bytes):
            summary = summary_of(entry, self.symbols)
            events = self._unpacked(cid, packed_events(entry))
            stuck = bool(summary.flags & FLAG_STUCK)
            saga = summary.saga
            compensation_failed = bool(summary.flags & FLAG_COMPENSATION_FAILED)
        elif entry.trace is not None:
            return entry.trace
        else:
            events = list(entry.events.values())
            stuck, saga = entry.stuck, entry.saga
            compensation_failed = entry.compensation_failed
        trace = fold(
            cid,
            {event.event_id: event for event in events},
            saga=saga,
            facts=self.facts,
            default_deadline_ms=self.default_deadline_ms,
            compensation_failed=compensation_failed,
        )
        trace.stuck = stuck and trace.state not in TERMINAL_STATES
        return trace

    def offsets(self) -> dict[TopicPartition, int]:
        """Return the next offset to read per topic-partition (what was fed so far)."""
        with self._cond:
            fed = {TopicPartition(*tp): offset for tp, offset in self._offsets.items()}
            return {**self._resume, **fed}
