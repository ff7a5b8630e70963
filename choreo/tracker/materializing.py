"""A tracker's sagas to and from summary records (see :mod:`choreo.tracker.summaries`).

A tracker instance of a group (:mod:`choreo.tracker.group`) notes every saga it changes
(:meth:`Materializing.track_changes`) and hands them out as summary records
(:meth:`Materializing.take_summaries`). Any tracker can load summary records
(:meth:`Materializing.load_summaries`): a new owner of a partition starts from them, and
the CLI and the viewer answer every question from them without folding the log. A loaded
saga is kept packed (its summary and its events, as the record carries them), so a new
event folds into it as into any packed saga, and ``get`` unpacks and folds it on demand.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from choreo.tracker.entries import (
    TERMINAL_STATES,
    Entry,
    Summary,
    pack_saga,
    packed_events,
    summary_of,
)
from choreo.tracker.keeping import SagaKeeping, logger
from choreo.tracker.model import SagaStatus, TraceEvent
from choreo.tracker.summaries import (
    SAGA,
    STATS,
    SummaryError,
    decode_saga,
    decode_stats,
    encode_saga,
    encode_stats,
    kind_of,
)
from choreo.transports.base import Record, TopicPartition

__all__ = ["Materializing"]


class Materializing(SagaKeeping):
    """Loads summary records into a tracker and takes the summaries of changed sagas."""

    _stats_of: dict[tuple[str, int], dict[str, int]]
    """The counters of each stats record loaded, by where it was read."""
    _deferred: set[str]
    """The running sagas :meth:`take_settled` held back at its last call."""

    def track_changes(self) -> None:
        """Note every saga that changes from now on, for :meth:`take_summaries`."""
        with self._cond:
            self._tracking = True

    def load_summaries(self, records: Iterable[Record]) -> int:
        """Apply the saga and stats records of a summary topic; return how many sagas.

        A saga record replaces what the tracker holds for its saga; a stats record sets
        the counters of its partition (:attr:`stats` is their sum). Records of another
        kind are skipped; unreadable ones are counted under ``unreadable summary`` and
        logged at debug level.
        """
        applied = 0
        with self._cond:
            for record in records:
                kind = kind_of(record)
                try:
                    if kind == SAGA:
                        self._apply_saga(*decode_saga(record.key, record.value))
                        applied += 1
                    elif kind == STATS:
                        self._apply_stats(record)
                except (SummaryError, struct.error) as exc:
                    logger.debug("summary record %s/%d@%d refused: %s", record.topic,
                                 record.partition, record.offset, exc)
                    self.stats.unreadable("unreadable summary")
            if applied:
                self._changed()
        return applied

    def _apply_saga(self, cid: str, summary: Summary, blob: bytes) -> None:
        """Keep a saga as its summary record says (packed, its events in the record's form)."""
        packed = pack_saga(summary, blob, self.symbols)
        full = self._full.get(cid)
        old = self._packed.get(cid)
        if full is not None:
            self._index.moving(cid)
            self._forget(full.status, full.saga)
            del self._full[cid]
            self._open.pop(cid, None)
            self._finished.pop(cid, None)
            full.packed_away = True
        elif old is not None:
            self._index.moving(cid)
            before = summary_of(old, self.symbols)
            self._forget(before.status, before.saga)
        else:
            self._index.added(cid)
        self._packed[cid] = packed
        self._counts[summary.status] += 1
        if summary.saga:
            self._types[summary.saga] = self._types.get(summary.saga, 0) + 1

    def _forget(self, status: SagaStatus, saga: str) -> None:
        self._counts[status] -= 1
        if saga:
            self._types[saga] -= 1

    def _apply_stats(self, record: Record) -> None:
        """Set one partition's counters and make :attr:`stats` their sum over partitions."""
        counters = decode_stats(record.value)
        self._stats_of[(record.topic, record.partition)] = counters
        total: dict[str, int] = {}
        for each in self._stats_of.values():
            for name, value in each.items():
                total[name] = total.get(name, 0) + value
        self.stats.restore(total)

    def take_summaries(self) -> tuple[list[str], list[tuple[bytes, bytes]]]:
        """Return the sagas changed since the last call and their summary records' key/value.

        The changes are forgotten; give the ids back with :meth:`retake` when the records
        could not be written. A saga whose numbers or texts do not fit a record is
        logged and left out.
        """
        with self._cond:
            cids = list(self._unsaved)
            self._unsaved.clear()
            self._deferred.clear()
            return cids, self._encode(cids)

    def take_settled(
        self, floor: Mapping[TopicPartition, int]
    ) -> tuple[list[str], list[tuple[bytes, bytes]], dict[TopicPartition, int]]:
        """Like :meth:`take_summaries`, but a running saga is written once per two calls.

        A changed saga is taken when it has ended, is packed, or was already held back
        at the previous call; any other running saga is held back once, so a saga whose
        events straddle a commit is usually written once, when it ends. Returns the ids
        and records taken and, per topic-partition, the lowest offset of an event of a
        held-back saga at or above ``floor`` (the offsets already committed): the caller
        must not commit past it, so a restart re-reads what the summaries do not hold.
        """
        with self._cond:
            full, deferred = self._full, self._deferred
            taken: list[str] = []
            held: list[Entry] = []
            for cid in self._unsaved:
                entry = full.get(cid)
                if entry is None or entry.state in TERMINAL_STATES or cid in deferred:
                    taken.append(cid)
                else:
                    held.append(entry)
            self._unsaved.difference_update(taken)
            deferred.clear()
            deferred.update(entry.cid for entry in held)
            return taken, self._encode(taken), _lowest_offsets(held, floor)

    def _encode(self, cids: list[str]) -> list[tuple[bytes, bytes]]:
        records: list[tuple[bytes, bytes]] = []
        for cid in cids:
            found = self._summary_and_events(cid)
            if found is None:
                continue
            try:
                records.append(encode_saga(cid, *found))
            except (struct.error, ValueError) as exc:
                logger.warning("saga %s cannot be materialized: %s", cid, exc)
        return records

    def retake(self, cids: Iterable[str]) -> None:
        """Note sagas as changed again (their summaries were not written)."""
        with self._cond:
            self._unsaved.update(cids)
            self._deferred.difference_update(cids)

    def stats_record(self) -> bytes:
        """Return the value of this tracker's stats record (its counters)."""
        with self._cond:
            return encode_stats(self.stats.as_dict())

    def _summary_and_events(self, cid: str) -> tuple[Summary, list[TraceEvent]] | None:
        entry = self._full.get(cid)
        if entry is not None:
            trace = entry.trace or self._trace_of(cid, entry)
            return entry.summary(), trace.events
        packed = self._packed.get(cid)
        if packed is None:
            return None
        return summary_of(packed, self.symbols), self._unpacked(cid, packed_events(packed))


def _lowest_offsets(
    entries: list[Entry], floor: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Return per topic-partition the lowest offset >= ``floor`` of the entries' events."""
    lowest: dict[TopicPartition, int] = {}
    for entry in entries:
        for event in entry.events.values():
            tp = TopicPartition(event.topic, event.partition)
            offset = event.offset
            if offset >= floor.get(tp, 0) and offset < lowest.get(tp, offset + 1):
                lowest[tp] = offset
    return lowest
