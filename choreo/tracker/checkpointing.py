"""Saving a tracker to its checkpoint store, and starting again from it.

A checkpoint holds the next offset per partition, the summary and packed events of every
saga changed since the last one, the new interned symbols and the counters; a tracker
started on it keeps only the summaries in memory and reads events back when needed.
"""

from __future__ import annotations

from choreo.tracker.compact import Symbols, pack_events
from choreo.tracker.entries import (
    Summary,
    pack_saga,
    packed_events,
    summary_of,
    without_events,
)
from choreo.tracker.keeping import SagaKeeping, logger
from choreo.tracker.model import SagaState, SagaStatus
from choreo.tracker.store import CheckpointStore, SagaRow


class Checkpointing(SagaKeeping):
    """Writes a tracker's changes to its :class:`CheckpointStore` and loads them back."""

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
