"""A tracker's deadlines: marking overdue running sagas stuck, and timeout candidates.

Only the sagas whose deadline passed are looked at: the saga index keeps the running, not
yet stuck sagas in deadline order.
"""

from __future__ import annotations

from dataclasses import replace

from choreo.tracker.entries import (
    FLAG_STUCK,
    TERMINAL_STATES,
    Entry,
    restamp,
    summary_of,
)
from choreo.tracker.keeping import _PLAIN, SagaKeeping
from choreo.tracker.model import SagaStatus, SagaTrace


class DeadlineChecks(SagaKeeping):
    """Finds a tracker's overdue sagas (see :meth:`check_deadlines`)."""

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
        if self._tracking:
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
            if self._tracking:
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
