"""The correlation-id tracker: feed it records, ask it about sagas.

:class:`Tracker` keeps every saga it has seen, keyed by correlation id, and re-folds a
saga (:func:`choreo.tracker.fold.fold`) from the set of its events whenever a new event
arrives, so its answer never depends on the order partitions were read in.

Memory stays bounded: a finished saga is kept in full only while it is among the
``keep_finished`` most recent ones; after that it is *packed*: replaced by a plain tuple
of its summary and its events packed into a few hundred bytes (payloads dropped, see
:mod:`choreo.tracker.compact`), unpacked again only to be shown or when a late event
arrives. At most ``max_open`` running sagas are kept in full; the least recently active
one beyond that is packed as well. With a ``checkpoint`` store, packed sagas live in the
store once saved, and only their summaries stay in memory.

Feeding is batched: :meth:`Tracker.feed_many` adds a chunk of records to their sagas'
event sets, then re-folds each changed saga once (a running saga waits for the end of the
read or for its terminal event), so a saga is folded about once per read whatever order
its events come in; :func:`~choreo.tracker.fold.causal_order` has its own fast path for
events already in causal order.

Thread-safe: one feeding thread and any number of reading threads (the web viewer) may
use a tracker at once; :meth:`Tracker.wait_for_change` lets readers block until something
changed.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from itertools import islice
from typing import Any, Final

from choreo.envelope import Header, Role
from choreo.graph import Choreography
from choreo.service import Service
from choreo.tracker.compact import Symbols, pack_events, unpack_events
from choreo.tracker.fold import DEFAULT_DEADLINE_MS, causal_order, fold, preferred
from choreo.tracker.graphfacts import GraphFacts, facts_from
from choreo.tracker.model import SagaState, SagaStatus, SagaTrace, TraceEvent
from choreo.tracker.store import CheckpointStore, SagaRow
from choreo.transports.base import Record, TopicPartition

__all__ = ["Tracker", "TrackerStats"]

logger = logging.getLogger(__name__)

_CID: Final = Header.CORRELATION_ID
_EID: Final = Header.EVENT_ID
_TYPE: Final = Header.EVENT_TYPE
_ROLE: Final = Header.ROLE
_SAGA: Final = Header.SAGA
_SERVICE: Final = Header.SERVICE
_STEP: Final = Header.STEP
_CAUSE: Final = Header.CAUSATION_ID
_AT: Final = Header.PRODUCED_AT
_NEEDS_HUMAN: Final = Header.NEEDS_HUMAN
_DLQ_REASON: Final = Header.DLQ_REASON
_ROLES: Final = {role.value.encode(): role for role in Role}
_TERMINAL_ROLES: Final = frozenset((Role.COMPLETED, Role.FAILED))
_FALSE: Final = (b"false", b"0", b"no")
_CHUNK: Final = 20_000
_CACHE_LIMIT: Final = 50_000

_STATUS_OF: Final = {state: SagaStatus(state.value) for state in SagaState}
_STATES: Final = tuple(SagaState)
_STATE_INDEX: Final = {state: index for index, state in enumerate(_STATES)}
_STATUSES: Final = tuple(SagaStatus)
_STATUS_INDEX: Final = {status: index for index, status in enumerate(_STATUSES)}

_Packed = tuple[str, int, int, int | None, int | None, int | None, int, int, bytes | None]
"""A compacted saga: a plain tuple of atomic values, so the garbage collector stops tracking
it (a full collection then never walks the finished sagas). The fields are, in order:
saga name, state index, status index, started at, ended at, deadline, flags, event count,
packed events (None once saved in the store)."""
_P_SAGA: Final = 0
_P_STATE: Final = 1
_P_STATUS: Final = 2
_P_STARTED: Final = 3
_P_DEADLINE: Final = 5
_P_FLAGS: Final = 6
_P_BLOB: Final = 8

_FLAG_STUCK: Final = 1
_FLAG_COMPENSATION_FAILED: Final = 2
_FLAG_TIMED_OUT: Final = 4


def _trace_event_factory() -> Callable[..., TraceEvent]:
    """Return a faster equivalent of ``TraceEvent(...)`` for the hot loop (10 positional fields).

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; setting
    the slots through their descriptors directly does the same in about half the time. The
    result is checked against the real constructor once; on any mismatch (a changed model)
    the plain constructor is used.
    """
    names = [f.name for f in fields(TraceEvent)]
    if names[-1] != "late" or len(names) != 11:
        return TraceEvent
    setters = [getattr(TraceEvent, name).__set__ for name in names]
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10 = setters
    make = object.__new__

    def new_event(  # noqa: PLR0917 - the same positional fields as TraceEvent(...)
        a: str, b: str, c: Role, d: str, e: int, f: str | None, g: str | None, h: str,
        i: int, j: int,
    ) -> TraceEvent:
        event: TraceEvent = make(TraceEvent)
        s0(event, a)
        s1(event, b)
        s2(event, c)
        s3(event, d)
        s4(event, e)
        s5(event, f)
        s6(event, g)
        s7(event, h)
        s8(event, i)
        s9(event, j)
        s10(event, False)
        return event

    probe = ("i", "t", Role.STEP, "s", 1, "c", "st", "tp", 2, 3)
    try:
        if new_event(*probe) == TraceEvent(*probe) and new_event(*probe) is not None:
            return new_event
    except (TypeError, AttributeError):
        pass
    return TraceEvent


_new_trace_event: Final = _trace_event_factory()


def _has_terminal(entry: _Entry) -> bool:
    """Return True when an entry holds a completed or failed event."""
    return any(event.role in _TERMINAL_ROLES for event in entry.events.values())


class TrackerStats:
    """Counters of what a tracker has read (plain ints, read under the tracker's lock)."""

    __slots__ = ("dead_letters", "duplicates", "events", "ignored", "invalid", "records", "skipped")

    def __init__(self) -> None:
        self.records = 0
        """Records fed."""
        self.events = 0
        """Distinct events folded."""
        self.duplicates = 0
        """Records whose event id was already known."""
        self.ignored = 0
        """Records without choreo headers."""
        self.invalid = 0
        """Records with a broken choreo header (logged at debug level)."""
        self.dead_letters = 0
        """Dead-letter records seen."""
        self.skipped = 0
        """Records below the checkpoint's offsets (already folded before a restart)."""

    def as_dict(self) -> dict[str, int]:
        """Return the counters by name."""
        return {name: getattr(self, name) for name in self.__slots__}


class _Entry:
    """One saga in full: its events, its last trace and a summary of it."""

    __slots__ = (
        "cid",
        "compensation_failed",
        "deadline_ms",
        "ended_at_ms",
        "event_count",
        "events",
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
        self.trace: SagaTrace | None = None
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
    def from_packed(cls, cid: str, packed: _Packed) -> _Entry:
        """Return an entry (without events yet) carrying a packed saga's summary."""
        entry = cls(cid)
        (entry.saga, state, status, entry.started_at_ms, entry.ended_at_ms,
         entry.deadline_ms, flags, entry.event_count, _) = packed
        entry.state, entry.status = _STATES[state], _STATUSES[status]
        entry.stuck = bool(flags & _FLAG_STUCK)
        entry.compensation_failed = bool(flags & _FLAG_COMPENSATION_FAILED)
        entry.timed_out = bool(flags & _FLAG_TIMED_OUT)
        return entry

    def packed(self, blob: bytes | None) -> _Packed:
        """Return this entry's summary and ``blob`` as a packed saga."""
        return (
            self.saga,
            _STATE_INDEX[self.state],
            _STATUS_INDEX[self.status],
            self.started_at_ms,
            self.ended_at_ms,
            self.deadline_ms,
            self.flags,
            self.event_count,
            blob,
        )

    @property
    def flags(self) -> int:
        return (
            (_FLAG_STUCK if self.stuck else 0)
            | (_FLAG_COMPENSATION_FAILED if self.compensation_failed else 0)
            | (_FLAG_TIMED_OUT if self.timed_out else 0)
        )


class Tracker:
    """Folds records into saga traces by correlation id and answers questions about them.

    ``choreography`` (a :class:`choreo.graph.Choreography` or its services) adds per-step
    deadlines and the compensatable steps; ``default_deadline_s`` is the deadline when
    none is declared; ``clock`` returns epoch seconds (for :meth:`check_deadlines`);
    ``checkpoint`` saves offsets and summaries (see :meth:`checkpoint`); ``max_open``
    bounds the running sagas kept in full and ``keep_finished`` the finished ones;
    ``decode`` turns a payload's bytes into a dict for :meth:`payload` (e.g.
    ``EventSerde.decode_dict``), and ``max_payloads`` bounds the payloads kept for it.
    """

    def __init__(
        self,
        *,
        choreography: Choreography | Iterable[Service] | None = None,
        default_deadline_s: float = DEFAULT_DEADLINE_MS / 1000,
        clock: Callable[[], float] = time.time,
        checkpoint: CheckpointStore | None = None,
        max_open: int = 100_000,
        keep_finished: int = 1_000,
        decode: Callable[[bytes], Any] | None = None,
        max_payloads: int = 10_000,
    ) -> None:
        if max_open < 1 or keep_finished < 0 or max_payloads < 0:
            raise ValueError("max_open must be >= 1, keep_finished and max_payloads >= 0")
        if choreography is not None and not isinstance(choreography, Choreography):
            choreography = Choreography.from_services(choreography)
        self.choreography: Choreography | None = choreography
        self.facts: GraphFacts | None = (
            facts_from(choreography) if choreography is not None else None
        )
        self.default_deadline_ms = int(default_deadline_s * 1000)
        self.clock = clock
        self.store = checkpoint
        self.max_open = max_open
        self.keep_finished = keep_finished
        self.decode = decode
        self.max_payloads = max_payloads
        self.stats = TrackerStats()
        self.symbols = Symbols()
        self.version = 0
        self._cond = threading.Condition(threading.RLock())
        self._entries: dict[str, _Entry | _Packed] = {}
        self._open: OrderedDict[str, None] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._idle_open: set[str] = set()  # packed sagas that are not terminal
        self._unsaved: set[str] = set()
        self._counts: dict[SagaStatus, int] = dict.fromkeys(SagaStatus, 0)
        self._types: dict[str, int] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._resume: dict[TopicPartition, int] = {}
        self._saved_symbols = 0
        self._payloads: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._text: dict[bytes, str] = {}
        self._topics: dict[str, str] = {}
        if checkpoint is not None:
            self._load(checkpoint)

    # --- feeding ----------------------------------------------------------------------

    def feed(self, record: Record) -> SagaTrace | None:
        """Fold one record; return its saga's new trace, or None when nothing changed.

        Records without choreo headers are ignored (counted in :attr:`stats`); a
        dead-letter record asking for a human marks its saga compensation-failed.
        """
        with self._cond:
            for entry in self._feed_chunk((record,), {}, final=True)[1]:
                return entry.trace if entry.trace is not None else self._trace_of(entry.cid, entry)
            return None

    def feed_many(self, records: Iterable[Record]) -> int:
        """Fold many records (re-folding each changed saga once per chunk); return how many.

        Records are drawn from ``records`` in chunks under the tracker's lock, which is
        released between chunks so readers are not starved; a live source should pass
        each polled batch rather than a generator that blocks. Between chunks a running
        saga's summary may lag (its trace, from :meth:`get`, never does); when this
        returns every saga is up to date.
        """
        count = 0
        iterator = iter(records)
        dirty: dict[str, _Entry] = {}
        while True:
            taken = self._feed_chunk(islice(iterator, _CHUNK), dirty, final=False)[0]
            if not taken:
                break
            count += taken
        if dirty:
            self._feed_chunk((), dirty, final=True)
        return count

    def _feed_chunk(  # noqa: PLR0912, PLR0915 - the hot loop, flat on purpose
        self, records: Iterable[Record], dirty: dict[str, _Entry], *, final: bool
    ) -> tuple[int, list[_Entry]]:
        """Add records' events to their sagas (collected in ``dirty``), then re-fold them.

        With ``final`` every saga in ``dirty`` is re-folded (and ``dirty`` emptied);
        otherwise only those with a terminal event, so they can be compacted, and the
        running ones wait for a later chunk (each saga is folded about once per read).
        Returns how many records were taken and the sagas re-folded.
        This is the tracker's hot loop, written flat on purpose (DESIGN §7): one dict of
        the headers, a few cached decodes, one TraceEvent per record.
        """
        with self._cond:
            stats = self.stats
            entries = self._entries
            offsets = self._offsets
            text = self._text.get
            decode_text = self._decode
            topic_text = self._topics.get
            resume = self._resume
            keep_payloads = self.decode is not None and self.max_payloads > 0
            new_event = _new_trace_event
            taken = added = duplicates = 0
            for record in records:
                taken += 1
                topic, partition, offset = record.topic, record.partition, record.offset
                if resume and self._already_read(topic, partition, offset):
                    continue
                # the next offset to read; a re-delivered older record moves it back, which
                # only makes a restart read (and deduplicate) a little more
                offsets[(topic, partition)] = offset + 1
                headers = dict(record.headers)
                cid_raw = headers.get(_CID)
                if cid_raw is None:
                    stats.ignored += 1
                    continue
                if _DLQ_REASON in headers or _NEEDS_HUMAN in headers:
                    marked = self._dead_letter(headers, cid_raw)
                    if marked is not None:
                        dirty[marked.cid] = marked
                    continue
                try:
                    eid = headers[_EID].decode()
                    cid = cid_raw.decode()
                    cause_raw = headers.get(_CAUSE)
                    step_raw = headers.get(_STEP)
                    type_raw = headers[_TYPE]
                    service_raw = headers.get(_SERVICE, b"")
                    saga_raw = headers.get(_SAGA, b"")
                    event = new_event(
                        eid,
                        text(type_raw) or decode_text(type_raw),
                        _ROLES[headers[_ROLE]],
                        text(service_raw) or decode_text(service_raw),
                        int(headers[_AT]),
                        None if cause_raw is None else cause_raw.decode(),
                        None if step_raw is None else (text(step_raw) or decode_text(step_raw)),
                        topic_text(topic) or self._topic(topic),
                        partition,
                        offset,
                    )
                    saga = text(saga_raw) or decode_text(saga_raw)
                except (KeyError, ValueError, UnicodeDecodeError) as exc:
                    stats.invalid += 1
                    logger.debug(
                        "record %s/%d@%d has a broken choreo header: %r",
                        topic, partition, offset, exc,
                    )
                    continue
                entry = entries.get(cid)
                if entry is None:
                    entry = self._new_entry(cid)
                elif isinstance(entry, tuple):
                    entry = self._expand(cid, entry)
                events = entry.events
                known = events.get(eid)
                if known is not None:
                    duplicates += 1
                    kept = preferred(known, event)
                    if kept is known:
                        continue
                    event = kept
                else:
                    added += 1
                events[eid] = event
                entry.trace = None  # stale until re-folded
                dirty[cid] = entry
                if saga is not entry.saga and saga and (not entry.saga or saga < entry.saga):
                    self._retype(entry, saga)
                if keep_payloads and record.value is not None:
                    self._keep_payload(cid, eid, record.value)
            stats.records += taken
            stats.events += added
            stats.duplicates += duplicates
            refold, settle = self._refold, self._settle
            if final:
                ready = list(dirty.values())
                dirty.clear()
            else:
                ready = [entry for entry in dirty.values() if _has_terminal(entry)]
                for entry in ready:
                    del dirty[entry.cid]
            for entry in ready:
                current = entries.get(entry.cid)
                if current is not entry:  # packed while it waited: expanding re-folds it
                    if isinstance(current, tuple):
                        self._expand(entry.cid, current)
                    continue
                refold(entry, new_event=True)
                settle(entry)
            self._evict()
            if ready:
                self._changed()
            return taken, ready

    def _already_read(self, topic: str, partition: int, offset: int) -> bool:
        """Return True (and count it) for a record below the checkpoint's offset."""
        resume = self._resume.get(TopicPartition(topic, partition))
        if resume is not None and 0 <= offset < resume:
            self.stats.skipped += 1
            return True
        return False

    def _new_entry(self, cid: str) -> _Entry:
        entry = self._entries[cid] = _Entry(cid)
        self._counts[entry.status] += 1
        return entry

    def _keep_payload(self, cid: str, eid: str, value: bytes) -> None:
        self._payloads[(cid, eid)] = value
        if len(self._payloads) > self.max_payloads:
            self._payloads.popitem(last=False)

    def _decode(self, raw: bytes) -> str:
        """Return the text of a low-cardinality header value (cached, one str per text)."""
        text = self._text.get(raw)
        if text is None:
            if len(self._text) >= _CACHE_LIMIT:
                self._text.clear()
            text = self._text[raw] = self.symbols.intern(raw.decode("utf-8"))
        return text

    def _topic(self, topic: str) -> str:
        text = self._topics[topic] = self.symbols.intern(topic)
        return text

    def _dead_letter(self, headers: dict[str, bytes], cid_raw: bytes) -> _Entry | None:
        """Count a dead-letter record; one asking for a human marks its saga."""
        self.stats.dead_letters += 1
        flag = headers.get(_NEEDS_HUMAN)
        if flag is None or flag.strip().lower() in _FALSE:
            return None
        try:
            cid = cid_raw.decode("utf-8")
        except UnicodeDecodeError:
            self.stats.invalid += 1
            return None
        entry = self._entries.get(cid)
        if entry is None:
            entry = self._new_entry(cid)
            saga = headers.get(_SAGA)
            if saga:
                self._retype(entry, self._decode(saga))
        elif isinstance(entry, tuple):
            if entry[_P_FLAGS] & _FLAG_COMPENSATION_FAILED:
                return None
            entry = self._expand(cid, entry)
        elif entry.compensation_failed:
            return None
        entry.compensation_failed = True
        return entry

    def _retype(self, entry: _Entry, saga: str) -> None:
        if entry.saga:
            self._types[entry.saga] -= 1
        entry.saga = saga
        self._types[saga] = self._types.get(saga, 0) + 1

    def _refold(self, entry: _Entry, *, new_event: bool) -> SagaTrace:
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
            trace.stuck = not trace.state.is_terminal
        entry.trace = trace
        self._summarise(entry, trace)
        return trace

    def _summarise(self, entry: _Entry, trace: SagaTrace) -> None:
        old = entry.status
        entry.state = trace.state
        entry.stuck = trace.stuck
        entry.timed_out = trace.timed_out
        entry.deadline_ms = trace.deadline_ms
        entry.started_at_ms = trace.events[0].produced_at_ms if trace.events else None
        entry.ended_at_ms = trace.ended_at_ms if trace.state.is_terminal else None
        entry.event_count = len(trace.events)
        if trace.violations:
            new = SagaStatus.VIOLATED
        elif trace.compensation_failed:
            new = SagaStatus.COMPENSATION_FAILED
        elif trace.stuck:
            new = SagaStatus.STUCK
        else:
            new = _STATUS_OF[trace.state]
        entry.status = new
        if new is not old:
            counts = self._counts
            counts[old] -= 1
            counts[new] += 1
        if self.store is not None:
            self._unsaved.add(entry.cid)

    def _settle(self, entry: _Entry) -> None:
        """File a full-form entry as open or finished (most recent last)."""
        cid = entry.cid
        self._idle_open.discard(cid)
        if entry.state.is_terminal:
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
            self._idle_open.add(cid)

    def _compact(self, cid: str) -> None:
        """Replace a full entry by its packed form (events packed, payloads dropped)."""
        entry = self._entries[cid]
        assert not isinstance(entry, tuple)
        trace = entry.trace
        events = trace.events if trace is not None else causal_order(entry.events)
        self._entries[cid] = entry.packed(pack_events(events, self.symbols))
        if self._payloads:
            for event in events:
                self._payloads.pop((cid, event.event_id), None)

    def _unpacked(self, cid: str, blob: bytes | None) -> list[TraceEvent]:
        """Return a packed saga's events, from memory or from the store."""
        if blob is None:
            blob = self.store.events(cid) if self.store is not None else None
            if blob is None:
                logger.warning("saga %s lost its events (not in the store)", cid)
                return []
        return unpack_events(blob, self.symbols)

    def _expand(self, cid: str, packed: _Packed) -> _Entry:
        """Bring a packed saga back to full form (re-folded and filed); return it."""
        entry = _Entry.from_packed(cid, packed)
        entry.events = {event.event_id: event for event in self._unpacked(cid, packed[_P_BLOB])}
        self._entries[cid] = entry
        self._refold(entry, new_event=False)
        self._settle(entry)
        return entry

    def _changed(self) -> None:
        self.version += 1
        self._cond.notify_all()

    # --- reading ----------------------------------------------------------------------

    def _trace_of(self, cid: str, entry: _Entry | _Packed) -> SagaTrace:
        """Return a saga's trace without changing how it is kept."""
        if isinstance(entry, tuple):
            events = self._unpacked(cid, entry[_P_BLOB])
            stuck = bool(entry[_P_FLAGS] & _FLAG_STUCK)
            saga = entry[_P_SAGA]
            compensation_failed = bool(entry[_P_FLAGS] & _FLAG_COMPENSATION_FAILED)
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
        trace.stuck = stuck and not trace.state.is_terminal
        return trace

    def kept_as(self, correlation_id: str) -> str | None:
        """Return how a saga is kept: ``"full"``, ``"packed"`` in memory, ``"stored"`` only."""
        with self._cond:
            entry = self._entries.get(correlation_id)
        if entry is None:
            return None
        if not isinstance(entry, tuple):
            return "full"
        return "packed" if entry[_P_BLOB] is not None else "stored"

    def get(self, correlation_id: str) -> SagaTrace | None:
        """Return the trace of one saga, or None when its correlation id was never seen."""
        with self._cond:
            entry = self._entries.get(correlation_id)
            return None if entry is None else self._trace_of(correlation_id, entry)

    def sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        stuck_only: bool = False,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SagaTrace]:
        """Return the sagas matching every given filter, newest first (by start time).

        ``since_ms``/``until_ms`` bound the start time (inclusive); ``search`` matches
        part of the correlation id (case-insensitive); ``limit``/``offset`` page.
        """
        needle = search.lower() if search else None
        with self._cond:
            found: list[tuple[int, str]] = []
            for cid, entry in self._entries.items():
                if isinstance(entry, tuple):
                    entry_status = _STATUSES[entry[_P_STATUS]]
                    entry_saga = entry[_P_SAGA]
                    entry_stuck = bool(entry[_P_FLAGS] & _FLAG_STUCK)
                    started = entry[_P_STARTED]
                else:
                    entry_status, entry_saga = entry.status, entry.saga
                    entry_stuck, started = entry.stuck, entry.started_at_ms
                if (
                    (status is None or entry_status is status)
                    and (saga is None or entry_saga == saga)
                    and (not stuck_only or entry_stuck)
                    and (since_ms is None or (started or 0) >= since_ms)
                    and (until_ms is None or (started or 0) <= until_ms)
                    and (needle is None or needle in cid.lower())
                ):
                    found.append((-1 if started is None else started, cid))
            newest = heapq.nlargest(max(0, offset) + max(0, limit), found)
            entries = self._entries
            return [self._trace_of(cid, entries[cid]) for _, cid in newest[offset:]]

    def counts(self) -> dict[SagaStatus, int]:
        """Return how many sagas have each status (every status present, zeros included)."""
        with self._cond:
            return dict(self._counts)

    def total(self) -> int:
        """Return how many sagas (correlation ids) the tracker knows."""
        with self._cond:
            return len(self._entries)

    def saga_types(self) -> list[str]:
        """Return the saga names seen, sorted."""
        with self._cond:
            return sorted(name for name, count in self._types.items() if count > 0)

    def payload(self, correlation_id: str, event_id: str) -> dict[str, Any] | None:
        """Return an event's decoded payload, or None (no ``decode``, or not kept any more)."""
        with self._cond:
            raw = self._payloads.get((correlation_id, event_id))
        if raw is None or self.decode is None:
            return None
        try:
            decoded = self.decode(raw)
        except Exception:
            logger.debug("payload of %s/%s does not decode", correlation_id, event_id,
                         exc_info=True)
            return None
        if isinstance(decoded, tuple) and len(decoded) == 2:
            decoded = decoded[1]
        return decoded if isinstance(decoded, dict) else None

    def offsets(self) -> dict[TopicPartition, int]:
        """Return the next offset to read per topic-partition (what was fed so far)."""
        with self._cond:
            fed = {TopicPartition(*tp): offset for tp, offset in self._offsets.items()}
            return {**self._resume, **fed}

    def wait_for_change(self, version: int, timeout: float | None = None) -> int:
        """Block until :attr:`version` moves past ``version`` (or ``timeout``); return it."""
        with self._cond:
            self._cond.wait_for(lambda: self.version > version, timeout)
            return self.version

    # --- deadlines ---------------------------------------------------------------------

    def check_deadlines(self, now_ms: int | None = None) -> list[SagaTrace]:
        """Mark the running sagas whose next event is overdue as stuck; return those newly stuck."""
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        with self._cond:
            newly: list[SagaTrace] = []
            for cid in [*self._open, *self._idle_open]:
                entry = self._entries[cid]
                if isinstance(entry, tuple):
                    deadline, flags = entry[_P_DEADLINE], entry[_P_FLAGS]
                    if flags & _FLAG_STUCK or deadline is None or now <= deadline:
                        continue
                    if _STATES[entry[_P_STATE]].is_terminal:
                        continue
                    old = _STATUSES[entry[_P_STATUS]]
                    new = SagaStatus.STUCK if old in _PLAIN else old
                    entry = (*entry[:_P_STATUS], _STATUS_INDEX[new], *entry[3:_P_FLAGS],
                             flags | _FLAG_STUCK, *entry[7:])
                    self._entries[cid] = entry
                    self._counts[old] -= 1
                    self._counts[new] += 1
                    if self.store is not None:
                        self._unsaved.add(cid)
                    newly.append(self._trace_of(cid, entry))
                    continue
                if entry.stuck or entry.deadline_ms is None or now <= entry.deadline_ms:
                    continue
                if entry.state.is_terminal:
                    continue
                entry.stuck = True
                if entry.trace is not None:
                    entry.trace = replace(entry.trace, stuck=True)
                    self._summarise(entry, entry.trace)
                else:  # waiting to be re-folded: only the summary changes now
                    old = entry.status
                    entry.status = SagaStatus.STUCK if old in _PLAIN else old
                    self._counts[old] -= 1
                    self._counts[entry.status] += 1
                    if self.store is not None:
                        self._unsaved.add(cid)
                newly.append(self._trace_of(cid, entry))
            if newly:
                self._changed()
            return newly

    # --- checkpoint ----------------------------------------------------------------------

    def checkpoint(self) -> int:
        """Save offsets and every saga changed since the last checkpoint; return how many.

        Does nothing without a store. Saved compacted sagas drop their packed events from
        memory (the store has them).
        """
        store = self.store
        if store is None:
            return 0
        with self._cond:
            rows = [self._row(cid, self._entries[cid]) for cid in self._unsaved]
            texts = self.symbols.texts
            new_symbols = list(enumerate(texts))[self._saved_symbols :]
            store.write(
                offsets=self.offsets(),
                sagas=rows,
                symbols=new_symbols,
                counters=self.stats.as_dict(),
            )
            self._saved_symbols = len(texts)
            for cid in self._unsaved:
                entry = self._entries[cid]
                if isinstance(entry, tuple) and entry[_P_BLOB] is not None:
                    self._entries[cid] = (*entry[:_P_BLOB], None)
            self._unsaved.clear()
            return len(rows)

    def _row(self, cid: str, entry: _Entry | _Packed) -> SagaRow:
        """Return a saga as the store keeps it (with its packed events)."""
        if isinstance(entry, tuple):
            blob = entry[_P_BLOB]
            if blob is None and self.store is not None:
                blob = self.store.events(cid)
            saga, state, status, started, ended, deadline, flags, count, _ = entry
            return SagaRow(
                cid, saga, _STATES[state].value, _STATUSES[status].value, started, ended,
                deadline, flags, count, blob if blob is not None else b"",
            )
        trace = entry.trace or self._trace_of(cid, entry)
        return SagaRow(
            cid,
            entry.saga,
            entry.state.value,
            entry.status.value,
            entry.started_at_ms,
            entry.ended_at_ms,
            entry.deadline_ms,
            entry.flags,
            entry.event_count,
            pack_events(trace.events, self.symbols),
        )

    def _load(self, store: CheckpointStore) -> None:
        """Start from a checkpoint: symbols, summaries (events stay in the store), offsets."""
        self.symbols = Symbols(store.symbols())
        self._saved_symbols = len(self.symbols)
        for row in store.summaries():
            state = SagaState(row.state)
            status = SagaStatus(row.status)
            self._entries[row.correlation_id] = (
                row.saga, _STATE_INDEX[state], _STATUS_INDEX[status], row.started_at_ms,
                row.ended_at_ms, row.deadline_ms, row.flags, row.event_count, None,
            )
            self._counts[status] += 1
            if row.saga:
                self._types[row.saga] = self._types.get(row.saga, 0) + 1
            if not state.is_terminal:
                self._idle_open.add(row.correlation_id)
        self._resume = store.offsets()
        saved = store.counters()
        for name in TrackerStats.__slots__:
            setattr(self.stats, name, saved.get(name, 0))
        logger.info(
            "resumed %d sagas and %d partition offsets from %s",
            len(self._entries), len(self._resume), store.path,
        )


_PLAIN: Final = frozenset(
    {
        SagaStatus.STARTED,
        SagaStatus.PENDING,
        SagaStatus.COMPENSATING,
    }
)
