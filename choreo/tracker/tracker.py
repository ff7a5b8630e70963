"""The correlation-id tracker: feed it records, ask it about sagas.

:class:`Tracker` keeps every saga it has seen, keyed by correlation id, and re-folds a
saga (:func:`choreo.tracker.fold.fold`) from the set of its events whenever a new event
arrives, so its answer never depends on the order partitions were read in.

Memory stays bounded: a finished saga is kept in full only while it is among the
``keep_finished`` most recent ones; after that it is *packed*: replaced by one ``bytes``
value holding its summary and its events in a few hundred bytes (payloads dropped, see
:mod:`choreo.tracker.entries` and :mod:`choreo.tracker.compact`), unpacked again only to
be shown or when a late event arrives. At most ``max_open`` running sagas are kept in
full; the least recently active one beyond that is packed as well. With a ``checkpoint``
store, packed sagas live in the store once saved, and only their summaries stay in memory.
Full and packed sagas are kept in two maps; the packed one holds no references, so the
garbage collector never walks it. A finished saga about to be packed is packed right
after its fold, while its events are still in the CPU caches.

Feeding is batched: :meth:`Tracker.feed_many` adds a chunk of records to their sagas'
event sets, then re-folds each changed saga once (a running saga waits for the end of the
read or for its terminal event), so a saga is folded about once per read whatever order
its events come in; :func:`~choreo.tracker.fold.causal_order` has its own fast path for
events already in causal order. The hot loop reads header values straight from the
record's header dict (no :class:`~choreo.model.envelope.Envelope` per record), decodes the few
low-cardinality ones (type, role, service, step, saga, topic) through one cache keyed by
their raw values, so every event of a type shares the same interned strings, and builds
each :class:`~choreo.tracker.model.TraceEvent` with ``tuple.__new__``. The sagas of the
current read are found in a small map before the large one of every saga.

Questions are answered from a saga index (:mod:`choreo.tracker.index`) kept in start-time
order per status, saga type and stuck mark, brought up to date lazily before each answer:
a page of :meth:`Tracker.find` costs O(page), :meth:`Tracker.count` and
:meth:`Tracker.counts` O(log n) or less, and :meth:`Tracker.check_deadlines` looks only
at the sagas whose deadline has passed.

Thread-safe: one feeding thread and any number of reading threads (the web viewer) may
use a tracker at once; :meth:`Tracker.wait_for_change` lets readers block until something
changed.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import Any, Final, cast

from choreo.choreography.graph import Choreography
from choreo.choreography.service import Service
from choreo.errors import TransportError
from choreo.model.envelope import Header, Role
from choreo.safety.text import printable
from choreo.tracker.accounting import (
    MAX_HEADER_BYTES,
    dead_letter_note,
    header_problem,
    unreadable_reason,
)
from choreo.tracker.compact import Symbols, pack_events, unpack_events
from choreo.tracker.entries import (
    FLAG_COMPENSATION_FAILED,
    FLAG_STUCK,
    TERMINAL_STATES,
    Entry,
    Summary,
    filing_of,
    pack_saga,
    packed_events,
    packed_filing,
    restamp,
    summary_of,
    without_events,
)
from choreo.tracker.fold import DEFAULT_DEADLINE_MS, causal_order, fold, preferred
from choreo.tracker.graphfacts import GraphFacts, facts_from
from choreo.tracker.index import Filing, SagaIndex
from choreo.tracker.model import DeadLetterNote, SagaState, SagaStatus, SagaTrace, TraceEvent
from choreo.tracker.query import SagaQuery
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
_BROKEN: Final = (KeyError, ValueError, UnicodeDecodeError, AttributeError, TypeError)
"""What a missing, undecodable or non-bytes choreo header raises in the hot loop."""
_MAX_ID: Final = MAX_HEADER_BYTES
_INT64: Final = 2**63
_MAX_NOTED_SAGAS: Final = 10_000
"""Sagas whose dead letters are kept for their timelines (the oldest noted is dropped)."""
_MAX_NOTES: Final = 50
"""Dead letters kept per saga."""
_ALL: Final = SagaQuery()

_STATUS_OF: Final = {state: SagaStatus(state.value) for state in SagaState}
_PLAIN: Final = frozenset({SagaStatus.STARTED, SagaStatus.PENDING, SagaStatus.COMPENSATING})

_Shape = tuple[bytes, bytes, bytes, bytes | None, bytes, str]
"""The raw type, role, service, step and saga header values of a record, and its topic."""
_Known = tuple[str, Role, str, str | None, str, str]
"""The same, decoded and interned."""


_COUNTERS: Final = (
    "dead_letters", "duplicates", "events", "ignored", "invalid", "records", "skipped"
)
_REASON_PREFIX: Final = "unreadable: "


class TrackerStats:
    """Counters of what a tracker has read (plain ints, read under the tracker's lock).

    Every record fed is counted once: as a new event (``events``), a ``duplicate``, a
    dead letter, a record without choreo headers (``ignored``), a record below the
    checkpoint (``skipped``), or an unreadable one (``invalid``, broken down by reason
    in :attr:`reasons`).
    """

    __slots__ = (*_COUNTERS, "reasons")

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
        self.reasons: dict[str, int] = {}
        """Unreadable records per reason (see :mod:`choreo.tracker.accounting`)."""

    def unreadable(self, reason: str) -> None:
        """Count one unreadable record under ``reason``."""
        self.invalid += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def as_dict(self) -> dict[str, int]:
        """Return the counters by name, each unreadable reason as ``unreadable: <reason>``."""
        counters = {name: getattr(self, name) for name in _COUNTERS}
        counters.update({_REASON_PREFIX + k: v for k, v in self.reasons.items()})
        return counters

    def restore(self, saved: dict[str, int]) -> None:
        """Set the counters from :meth:`as_dict`'s form (missing ones are zero)."""
        for name in _COUNTERS:
            setattr(self, name, saved.get(name, 0))
        self.reasons = {
            k[len(_REASON_PREFIX) :]: v for k, v in saved.items() if k.startswith(_REASON_PREFIX)
        }


def _out_of_bounds(eid: bytes, cid: bytes | None, cause: bytes | None, at: int) -> bool:
    """Return True when an id is empty or too long, or a time does not fit 64 bits."""
    return (
        not eid
        or not cid
        or len(eid) > _MAX_ID
        or len(cid) > _MAX_ID
        or (cause is not None and len(cause) > _MAX_ID)
        or not -_INT64 <= at < _INT64
    )


class Tracker:
    """Folds records into saga traces by correlation id and answers questions about them.

    ``choreography`` (a :class:`choreo.Choreography` or its services) adds per-step
    deadlines and the compensatable steps; ``default_deadline_s`` is the deadline when
    none is declared; ``clock`` returns epoch seconds (for :meth:`check_deadlines`);
    ``checkpoint`` saves offsets and summaries (see :meth:`checkpoint`); ``max_open``
    bounds the running sagas kept in full and ``keep_finished`` the finished ones;
    ``decode`` turns a payload's bytes into a dict for :meth:`payload` (e.g.
    ``EventSerde.decode_dict``), and ``max_payloads`` bounds the payloads kept for it.

    Only a record with a valid envelope (see :mod:`choreo.tracker.accounting`) and a
    payload starts or changes a saga; with ``decode`` and ``check_payloads`` the payload
    must also decode, as the type its headers name. Every other record is counted in
    :attr:`stats` under its reason; dead letters are noted on their saga's timeline
    (:attr:`SagaTrace.dead_letters`).
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
        check_payloads: bool = True,
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
        self.check_payloads = check_payloads
        self.stats = TrackerStats()
        self.on_finished: Callable[[SagaTrace], None] | None = None
        """Called (under the tracker's lock, keep it short) with each saga that just ended."""
        self.symbols = Symbols()
        self.version = 0
        self._cond = threading.Condition(threading.RLock())
        self._full: dict[str, Entry] = {}
        self._packed: dict[str, bytes] = {}  # bytes only: the garbage collector skips it
        self._index = SagaIndex(self._filing, self._filings, self._size)
        self._open: OrderedDict[str, None] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._unsaved: set[str] = set()
        self._counts: dict[SagaStatus, int] = dict.fromkeys(SagaStatus, 0)
        self._types: dict[str, int] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._resume: dict[TopicPartition, int] = {}
        self._saved_symbols = 0
        self._payloads: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._text: dict[bytes, str] = {}
        self._shapes: dict[_Shape, _Known] = {}
        self._notes: OrderedDict[str, list[DeadLetterNote]] = OrderedDict()
        self._noted = False
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
        dirty: dict[str, Entry] = {}
        while True:
            taken = self._feed_chunk(islice(iterator, _CHUNK), dirty, final=False)[0]
            if not taken:
                break
            count += taken
        if dirty:
            self._feed_chunk((), dirty, final=True)
        return count

    def _feed_chunk(
        self, records: Iterable[Record], dirty: dict[str, Entry], *, final: bool
    ) -> tuple[int, list[Entry]]:
        """Add records' events to their sagas (collected in ``dirty``), then re-fold them.

        With ``final`` every saga in ``dirty`` is re-folded (and ``dirty`` emptied);
        otherwise only those with a terminal event, so they can be compacted, and the
        running ones wait for a later chunk (each saga is folded about once per read).
        Returns how many records were taken and the sagas re-folded.
        """
        with self._cond:
            taken, added, duplicates = self._add_records(records, dirty)
            stats = self.stats
            stats.records += taken
            stats.events += added
            stats.duplicates += duplicates
            if final:
                ready = list(dirty.values())
                dirty.clear()
            else:
                ready = [entry for entry in dirty.values() if entry.ended]
                for entry in ready:
                    del dirty[entry.cid]
            self._refold_ready(ready)
            self._evict()
            if ready or self._noted:
                self._noted = False
                self._changed()
            return taken, ready

    def _add_records(
        self, records: Iterable[Record], dirty: dict[str, Entry]
    ) -> tuple[int, int, int]:
        """Add each record's event to its saga's event set.

        Returns how many records were taken, how many events were new and how many were
        duplicates (known event ids).

        The tracker's hot loop, flat on purpose: one dict of the headers, one cache
        look-up for the low-cardinality values, one TraceEvent per record; the sagas of
        this read are found in the small, cache-warm ``dirty`` map before the large ones.
        """
        offsets = self._offsets
        shape_of = self._shapes.get
        resume = self._resume
        keep_payloads = self.decode is not None and self.max_payloads > 0
        check_payloads = self.decode is not None and self.check_payloads
        make = tuple.__new__  # TraceEvent(...) without the keyword handling
        taken = added = duplicates = 0
        for taken, record in enumerate(records, 1):  # noqa: B007 - taken is the count
            topic, partition, offset = record.topic, record.partition, record.offset
            if resume and self._already_read(topic, partition, offset):
                continue
            # the next offset to read; a re-delivered older record moves it back, which
            # only makes a restart read (and deduplicate) a little more
            offsets[(topic, partition)] = offset + 1
            raw_headers = record.headers
            headers = dict(raw_headers)
            cid_raw = headers.get(_CID)
            if (
                cid_raw is None
                or len(headers) != len(raw_headers)
                or None in headers.values()
                or _DLQ_REASON in headers
                or _NEEDS_HUMAN in headers
            ) and self._set_aside(record, headers, dirty):
                continue
            try:
                shape = (
                    headers[_TYPE],
                    headers[_ROLE],
                    headers.get(_SERVICE, b""),
                    headers.get(_STEP),
                    headers.get(_SAGA, b""),
                    topic,
                )
                event_type, role, service, step, saga, topic = shape_of(shape) or self._learn(shape)
                eid_raw, cause_raw, at = headers[_EID], headers.get(_CAUSE), int(headers[_AT])
                if _out_of_bounds(eid_raw, cid_raw, cause_raw, at):
                    raise ValueError("an empty or too long id, or a time beyond 64 bits")
                eid = eid_raw.decode()
                cid = cast("bytes", cid_raw).decode()  # not None: _set_aside took those
                event = make(
                    TraceEvent,
                    (
                        eid,
                        event_type,
                        role,
                        service,
                        at,
                        None if cause_raw is None else cause_raw.decode(),
                        step,
                        topic,
                        partition,
                        offset,
                        False,
                    ),
                )
            except _BROKEN:
                self._unreadable(record, headers)
                continue
            if (check_payloads or record.value is None) and self._bad_payload(
                event_type, record.value
            ):
                continue
            entry = dirty.get(cid)
            if entry is None or entry.packed_away:
                entry = self._entry_of(cid)
            known = entry.events.setdefault(eid, event)
            if known is event:
                added += 1
            else:
                duplicates += 1
                if preferred(known, event) is known:
                    continue
                entry.events[eid] = event
            entry.trace = None  # stale until re-folded
            dirty[cid] = entry
            entry.ended = entry.ended or role in _TERMINAL_ROLES
            if saga is not entry.saga:
                self._name_saga(entry, saga)
            if keep_payloads:
                self._keep_payload(cid, eid, record.value)
        return taken, added, duplicates

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

    def _refold_ready(self, ready: list[Entry]) -> None:
        """Re-fold the sagas whose events changed; pack a finished one about to be evicted."""
        packed_sagas = self._packed
        refold, settle = self._refold, self._settle
        finished, keep_finished = self._finished, self.keep_finished
        for entry in ready:
            if entry.packed_away:  # packed while it waited: expanding re-folds it
                packed = packed_sagas.get(entry.cid)
                if packed is not None:
                    self._expand(entry.cid, packed)
                continue
            trace = refold(entry, new_event=True)
            if trace.state in TERMINAL_STATES and len(finished) >= keep_finished:
                # it will be packed: do it now, while its events are in the CPU caches
                # (the blob is used when it is evicted, unless an event changes it first)
                entry.blob = self._pack(entry.cid, trace.events)
            settle(entry)

    def _entry_of(self, cid: str) -> Entry:
        """Return a saga's entry in full: the kept one, the packed one expanded, or a new one."""
        entry = self._full.get(cid)
        if entry is not None:
            return entry
        packed = self._packed.get(cid)
        return self._new_entry(cid) if packed is None else self._expand(cid, packed)

    def _name_saga(self, entry: Entry, saga: str) -> None:
        """Give a saga the type an event names, if it has none or this one sorts first.

        Events of one saga normally agree; when they do not, the smallest name wins,
        so the type does not depend on the order the events were read in.
        """
        if saga and (not entry.saga or saga < entry.saga):
            self._retype(entry, saga)

    def _learn(self, shape: _Shape) -> _Known:
        """Decode (and cache) a record's low-cardinality values; raise when one is broken."""
        type_raw, role_raw, service_raw, step_raw, saga_raw, topic = shape
        if not type_raw or max(len(type_raw), len(service_raw), len(saga_raw)) > _MAX_ID or (
            step_raw is not None and len(step_raw) > _MAX_ID
        ):
            raise ValueError("an empty type or a header value too long")
        decode = self._decode
        known = (
            decode(type_raw),
            _ROLES[role_raw],
            decode(service_raw),
            None if step_raw is None else decode(step_raw),
            decode(saga_raw),
            self.symbols.intern(topic),
        )
        if len(self._shapes) >= _CACHE_LIMIT:
            self._shapes.clear()
        self._shapes[shape] = known
        return known

    def _already_read(self, topic: str, partition: int, offset: int) -> bool:
        """Return True (and count it) for a record below the checkpoint's offset."""
        resume = self._resume.get(TopicPartition(topic, partition))
        if resume is not None and 0 <= offset < resume:
            self.stats.skipped += 1
            return True
        return False

    def _new_entry(self, cid: str) -> Entry:
        entry = self._full[cid] = Entry(cid)
        self._counts[entry.status] += 1
        self._index.added(cid)
        return entry

    def _keep_payload(self, cid: str, eid: str, value: bytes | None) -> None:
        if value is None:
            return
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
        if self.store is not None:
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

    # --- reading ----------------------------------------------------------------------

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

    def kept_as(self, correlation_id: str) -> str | None:
        """Return how a saga is kept: ``"full"``, ``"packed"`` in memory, ``"stored"`` only."""
        with self._cond:
            entry = self._lookup(correlation_id)
        if entry is None:
            return None
        if not isinstance(entry, bytes):
            return "full"
        return "packed" if packed_events(entry) is not None else "stored"

    def get(self, correlation_id: str) -> SagaTrace | None:
        """Return the trace of one saga, or None when its correlation id was never seen."""
        with self._cond:
            entry = self._lookup(correlation_id)
            if entry is None:
                return None
            return self._with_notes(correlation_id, self._trace_of(correlation_id, entry))

    def _with_notes(self, cid: str, trace: SagaTrace) -> SagaTrace:
        """Return ``trace`` carrying the dead letters noted for its saga."""
        notes = self._notes.get(cid)
        if notes:
            trace.dead_letters = list(notes)
        return trace

    def find(
        self, query: SagaQuery | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SagaTrace]:
        """Return a page of the sagas matching ``query`` (all when None), newest first.

        Costs O(offset + limit) index steps plus the traces returned, whatever the number
        of sagas; a ``search`` scans the admitted sagas until the page is full.
        """
        with self._cond:
            index = self._index
            index.sync()
            full, packed, trace_of = self._full, self._packed, self._trace_of
            traces = [
                (cid, trace_of(cid, full[cid] if cid in full else packed[cid]))
                for cid in index.find(query or _ALL, limit, offset)
            ]
            if self._notes:
                return [self._with_notes(cid, trace) for cid, trace in traces]
            return [trace for _, trace in traces]

    def count(self, query: SagaQuery | None = None) -> int | None:
        """Return how many sagas match ``query`` (all when None); None for a ``search``."""
        with self._cond:
            self._index.sync()
            return self._index.count(query or _ALL)

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
        """Return the sagas matching every given filter, newest first (see :class:`SagaQuery`).

        The keyword form of :meth:`find`; ``limit``/``offset`` page.
        """
        query = SagaQuery(status, saga, since_ms, until_ms, stuck_only, search)
        return self.find(query, limit=limit, offset=offset)

    def counts(self) -> dict[SagaStatus, int]:
        """Return how many sagas have each status (every status present, zeros included)."""
        with self._cond:
            return dict(self._counts)

    def total(self) -> int:
        """Return how many sagas (correlation ids) the tracker knows."""
        with self._cond:
            return self._size()

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
        """Mark the running sagas whose next event is overdue as stuck; return those newly stuck.

        Only the sagas whose deadline passed are looked at (the index keeps the running,
        not yet stuck sagas in deadline order).
        """
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        with self._cond:
            index = self._index
            index.sync()
            newly: list[SagaTrace] = []
            for cid in index.overdue(now):
                index.moving(cid)
                entry = self._full.get(cid)
                trace = (
                    self._stuck_packed(cid, now) if entry is None else self._stuck_full(entry, now)
                )
                if trace is not None:
                    newly.append(trace)
            if newly:
                self._changed()
            return newly

    def _stuck_packed(self, cid: str, now: int) -> SagaTrace | None:
        """Mark a packed running saga stuck if its deadline passed; return its trace then."""
        packed = self._packed[cid]
        summary = summary_of(packed, self.symbols)
        deadline, flags = summary.deadline_ms, summary.flags
        if flags & FLAG_STUCK or deadline is None or now <= deadline:
            return None
        if summary.state in TERMINAL_STATES:
            return None
        old = summary.status
        new = SagaStatus.STUCK if old in _PLAIN else old
        packed = self._packed[cid] = restamp(packed, new, flags | FLAG_STUCK)
        self._counts[old] -= 1
        self._counts[new] += 1
        if self.store is not None:
            self._unsaved.add(cid)
        return self._trace_of(cid, packed)

    def _stuck_full(self, entry: Entry, now: int) -> SagaTrace | None:
        """Mark a running saga kept in full stuck if its deadline passed; return its trace then."""
        if entry.stuck or entry.deadline_ms is None or now <= entry.deadline_ms:
            return None
        if entry.state in TERMINAL_STATES:
            return None
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
                self._unsaved.add(entry.cid)
        return self._trace_of(entry.cid, entry)

    def timeout_candidates(self, now_ms: int) -> list[str]:
        """Return the sagas moving forward whose deadline passed before ``now_ms``.

        These are the correlation ids of the sagas in state Started or Pending that have
        not timed out yet and whose deadline is before ``now_ms``, earliest deadline
        first: what :class:`~choreo.tracker.timeouts.TimeoutService` may time out. Costs
        O(log n) plus the ids returned.
        """
        with self._cond:
            self._index.sync()
            return self._index.due(now_ms)

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
            rows = [self._row(cid) for cid in self._unsaved]
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
                packed = self._packed.get(cid)
                if packed is not None and packed_events(packed) is not None:
                    self._packed[cid] = without_events(packed)
            self._unsaved.clear()
            return len(rows)

    def _row(self, cid: str) -> SagaRow:
        """Return a saga as the store keeps it (with its packed events)."""
        entry = self._full.get(cid)
        if entry is None:
            packed = self._packed[cid]
            blob = packed_events(packed)
            if blob is None and self.store is not None:
                blob = self.store.events(cid)
            saga, state, status, flags, started, ended, deadline, count = summary_of(
                packed, self.symbols
            )
            return SagaRow(
                cid, saga, state.value, status.value, started, ended, deadline, flags, count,
                blob if blob is not None else b"",
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
            status = SagaStatus(row.status)
            summary = Summary(
                row.saga, SagaState(row.state), status, row.flags, row.started_at_ms,
                row.ended_at_ms, row.deadline_ms, row.event_count,
            )
            self._packed[row.correlation_id] = pack_saga(summary, None, self.symbols)
            self._counts[status] += 1
            if row.saga:
                self._types[row.saga] = self._types.get(row.saga, 0) + 1
        self._index.invalidate()
        self._resume = store.offsets()
        self.stats.restore(store.counters())
        logger.info(
            "resumed %d sagas and %d partition offsets from %s",
            self._size(), len(self._resume), store.path,
        )

