"""How a tracker is fed: records to their sagas' event sets, then one re-fold per saga.

Feeding is batched: :meth:`SagaFeeding.feed_many` adds a chunk of records to their sagas'
event sets, then re-folds each changed saga once (a running saga waits for the end of the
read or for its terminal event), so a saga is folded about once per read whatever order
its events come in; :func:`~choreo.tracker.fold.causal_order` has its own fast path for
events already in causal order. The hot loop reads header values straight from the
record's header dict (no :class:`~choreo.model.envelope.Envelope` per record), decodes the few
low-cardinality ones (type, role, service, step, saga, topic) through one cache keyed by
their raw values, so every event of a type shares the same interned strings, and builds
each :class:`~choreo.tracker.model.TraceEvent` with ``tuple.__new__``. The sagas of the
current read are found in a small map before the large one of every saga. A finished saga
about to be packed is packed right after its fold, while its events are still in the CPU
caches.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Final, cast

from choreo.model.envelope import Header, Role
from choreo.tracker.accounting import (
    MAX_HEADER_BYTES,
)
from choreo.tracker.entries import (
    TERMINAL_STATES,
    Entry,
)
from choreo.tracker.fold import preferred
from choreo.tracker.keeping import (
    _CACHE_LIMIT,
    _TERMINAL_ROLES,
    _Known,
    _Shape,
)
from choreo.tracker.model import SagaTrace, TraceEvent
from choreo.tracker.screening import RecordScreening
from choreo.transports.base import Record, TopicPartition

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
_CHUNK: Final = 20_000
_BROKEN: Final = (KeyError, ValueError, UnicodeDecodeError, AttributeError, TypeError)
"""What a missing, undecodable or non-bytes choreo header raises in the hot loop."""
_MAX_ID: Final = MAX_HEADER_BYTES
_INT64: Final = 2**63


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


class SagaFeeding(RecordScreening):
    """Feeds records into a tracker's sagas (the feeding side of the tracker)."""

    def feed(self, record: Record) -> SagaTrace | None:
        """Fold one record; return its saga's new trace, or None when nothing changed.

        Records without choreo headers are ignored (counted in :attr:`stats`); a
        dead-letter record asking for a human marks its saga compensation-failed.
        """
        with self._cond:
            for entry in self._feed_chunk((record,), {}, final=True)[1]:
                return entry.trace if entry.trace is not None else self._trace_of(entry.cid, entry)
            return None

    def feed_many(self, records: Iterable[Record], *, settle: bool = True) -> int:
        """Fold many records (re-folding each changed saga once per chunk); return how many.

        Records are drawn from ``records`` in chunks under the tracker's lock, which is
        released between chunks so readers are not starved; a live source should pass
        each polled batch rather than a generator that blocks. Between chunks a running
        saga's summary may lag (its trace, from :meth:`get`, never does); when this
        returns every saga is up to date, unless ``settle`` is False: then the sagas that
        changed wait (each re-folded once however many calls feed it) until
        :meth:`settle` or a call that settles; the caller bounds how many wait by
        settling regularly.
        """
        count = 0
        iterator = iter(records)
        dirty = self._waiting
        while True:
            chunk = islice(iterator, _CHUNK)
            taken = self._feed_chunk(chunk, dirty, final=False, ended=settle)[0]
            if not taken:
                break
            count += taken
        if settle and dirty:
            self._feed_chunk((), dirty, final=True)
        return count

    def settle(self) -> None:
        """Re-fold the running sagas left waiting by ``feed_many(..., settle=False)``."""
        if self._waiting:
            self._feed_chunk((), self._waiting, final=True)

    def _feed_chunk(
        self, records: Iterable[Record], dirty: dict[str, Entry], *, final: bool,
        ended: bool = True,
    ) -> tuple[int, list[Entry]]:
        """Add records' events to their sagas (collected in ``dirty``), then re-fold them.

        With ``final`` every saga in ``dirty`` is re-folded (and ``dirty`` emptied);
        otherwise only those with a terminal event (unless ``ended`` is False), so they
        can be compacted, and the running ones wait for a later chunk (each saga is
        folded about once per read).
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
            elif not ended:
                ready = []
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
        resume = self._resume
        keep_payloads, check_payloads = self._payload_modes()
        read_event = self._read_event
        taken = added = duplicates = 0
        for taken, record in enumerate(records, 1):  # noqa: B007 - taken is the count
            topic, partition, offset = record.topic, record.partition, record.offset
            if resume and self._already_read(topic, partition, offset):
                continue
            # the next offset to read; a re-delivered older record moves it back, which
            # only makes a restart read (and deduplicate) a little more
            offsets[(topic, partition)] = offset + 1
            read = read_event(record, dirty)
            if read is None:
                continue
            cid, event, saga = read
            if (check_payloads or record.value is None) and self._bad_payload(
                event.event_type, record.value
            ):
                continue
            entry = dirty.get(cid)
            if entry is None or entry.packed_away:
                entry = self._entry_of(cid)
            eid = event.event_id
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
            entry.ended = entry.ended or event.role in _TERMINAL_ROLES
            if saga is not entry.saga:
                self._name_saga(entry, saga)
            if keep_payloads:
                self._keep_payload(cid, eid, record.value)
        return taken, added, duplicates

    def _payload_modes(self) -> tuple[bool, bool]:
        """Return whether payloads are kept (for :meth:`payload`) and whether they are checked."""
        decodes = self.decode is not None
        return decodes and self.max_payloads > 0, decodes and self.check_payloads

    def _read_event(
        self, record: Record, dirty: dict[str, Entry]
    ) -> tuple[str, TraceEvent, str] | None:
        """Return a record's correlation id, event and saga type; None when it is no event.

        A record that is not a plain event (no choreo headers, a dead letter, repeated or
        null choreo headers) is set aside, an unreadable one counted; both give None.
        One dict of the headers, one cache look-up for the low-cardinality values, one
        TraceEvent built with ``tuple.__new__`` (no keyword handling).
        """
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
            return None
        try:
            shape = (
                headers[_TYPE],
                headers[_ROLE],
                headers.get(_SERVICE, b""),
                headers.get(_STEP),
                headers.get(_SAGA, b""),
                record.topic,
            )
            event_type, role, service, step, saga, topic = (
                self._shapes.get(shape) or self._learn(shape)
            )
            eid_raw, cause_raw, at = headers[_EID], headers.get(_CAUSE), int(headers[_AT])
            if _out_of_bounds(eid_raw, cid_raw, cause_raw, at):
                raise ValueError("an empty or too long id, or a time beyond 64 bits")
            cid = cast("bytes", cid_raw).decode()  # not None: _set_aside took those
            event = tuple.__new__(
                TraceEvent,
                (
                    eid_raw.decode(),
                    event_type,
                    role,
                    service,
                    at,
                    None if cause_raw is None else cause_raw.decode(),
                    step,
                    topic,
                    record.partition,
                    record.offset,
                    False,
                ),
            )
        except _BROKEN:
            self._unreadable(record, headers)
            return None
        return cid, event, saga

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

    def _keep_payload(self, cid: str, eid: str, value: bytes | None) -> None:
        if value is None:
            return
        self._payloads[(cid, eid)] = value
        if len(self._payloads) > self.max_payloads:
            self._payloads.popitem(last=False)
