"""The tracker's saga index: sagas in start-time order per bucket, and running sagas by deadline.

Every saga is *filed* under one bucket, its (status, saga type, stuck) triple, by the key
``(started_at_ms, correlation_id)``; a page of :meth:`SagaIndex.find` merges the buckets a
:class:`~choreo.tracker.query.SagaQuery` admits, newest first, from the end of its time
range: O(buckets + (offset + limit) log buckets), whatever the number of sagas. Counting
is a pair of rank look-ups per bucket. Two more orders serve deadlines: running sagas not
yet stuck (what :meth:`~choreo.tracker.Tracker.check_deadlines` must look at), and sagas
still moving forward that have not timed out (what the timeout service looks at), both by
``(deadline_ms, correlation_id)``.

The index is brought up to date lazily, under the tracker's lock, before it answers: the
tracker tells it, *before* changing a saga, where that saga is filed (:meth:`SagaIndex.moving`);
:meth:`SagaIndex.sync` then moves only the sagas whose filing changed. So a saga whose
start time moves (an earlier event arrived late), whose status changes or that is packed,
stored or expanded is re-filed once, however often it changed in between. When more than
about a quarter of the sagas changed (a bulk read), the index forgets the individual
moves and is rebuilt in one sort instead, which is cheaper.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Final

from choreo.tracker.model import SagaStatus
from choreo.tracker.query import SagaQuery

__all__ = ["Filing", "SagaIndex", "SortedKeys"]

Key = tuple[int, str]
"""An index key: a time (start or deadline, epoch ms) and a correlation id."""

Filing = tuple[int, SagaStatus, str, bool, int | None, int | None]
"""Where a saga is filed: start time (-1 when unknown), status, saga type, stuck, the
deadline while it is running and not stuck (else None), the deadline while it moves forward
and has not timed out (else None)."""

_Bucket = tuple[SagaStatus, str, bool]

_LOAD: Final = 512
"""Keys per block of a :class:`SortedKeys` (split at twice this)."""
_REBUILD_BASE: Final = 256
"""Changes noted beyond this plus a quarter of the sagas make the next sync a rebuild."""


class SortedKeys:
    """A sorted set of :data:`Key` values kept in blocks: insert and remove in O(log n + block)."""

    __slots__ = ("_blocks", "_maxes", "_size")

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        ordered = sorted(keys)
        self._blocks = [ordered[at : at + _LOAD] for at in range(0, len(ordered), _LOAD)]
        self._maxes = [block[-1] for block in self._blocks]
        self._size = len(ordered)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Key]:
        for block in self._blocks:
            yield from block

    def add(self, key: Key) -> None:
        """Insert ``key`` (it must not be present)."""
        blocks, maxes = self._blocks, self._maxes
        self._size += 1
        if not maxes:
            blocks.append([key])
            maxes.append(key)
            return
        at = bisect_left(maxes, key)
        if at == len(maxes):
            at -= 1
            block = blocks[at]
            block.append(key)
            maxes[at] = key
        else:
            block = blocks[at]
            insort(block, key)
        if len(block) > 2 * _LOAD:
            blocks.insert(at + 1, block[_LOAD:])
            del block[_LOAD:]
            maxes.insert(at + 1, maxes[at])
            maxes[at] = block[-1]

    def discard(self, key: Key) -> None:
        """Remove ``key`` when it is present."""
        blocks, maxes = self._blocks, self._maxes
        at = bisect_left(maxes, key)
        if at == len(maxes):
            return
        block = blocks[at]
        index = bisect_left(block, key)
        if block[index] != key:
            return
        del block[index]
        self._size -= 1
        if not block:
            del blocks[at]
            del maxes[at]
        elif index == len(block):
            maxes[at] = block[-1]

    def rank(self, key: Key) -> int:
        """Return how many keys are smaller than ``key``."""
        at = bisect_left(self._maxes, key)
        if at == len(self._maxes):
            return self._size
        return sum(map(len, self._blocks[:at])) + bisect_left(self._blocks[at], key)

    def descending(self, low: Key | None, high: Key | None, skip: int = 0) -> Iterator[Key]:
        """Yield the keys ``k`` with ``low <= k < high`` (None: unbounded), largest first.

        The first ``skip`` of them are passed over without being looked at.
        """
        blocks = self._blocks
        if not blocks:
            return
        if high is None:
            at, index = len(blocks) - 1, len(blocks[-1])
        else:
            at = bisect_left(self._maxes, high)
            if at == len(blocks):
                at, index = at - 1, len(blocks[-1])
            else:
                index = bisect_left(blocks[at], high)
        while skip and at >= 0:
            if index > skip:
                index -= skip
                break
            skip -= index
            at -= 1
            index = len(blocks[at]) if at >= 0 else 0
        while at >= 0:
            block = blocks[at]
            for position in range(index - 1, -1, -1):
                key = block[position]
                if low is not None and key < low:
                    return
                yield key
            at -= 1
            if at >= 0:
                index = len(blocks[at])

    def below(self, high: Key) -> Iterator[Key]:
        """Yield the keys smaller than ``high``, smallest first."""
        for block in self._blocks:
            if block[-1] < high:
                yield from block
                continue
            yield from islice(block, bisect_left(block, high))
            return


class SagaIndex:
    """Sagas filed by bucket and start time, and running sagas by deadline (see the module).

    ``filing(cid)`` says where a saga belongs now, ``everything()`` yields every saga
    with its filing (for a rebuild) and ``size()`` says how many sagas there are.
    """

    __slots__ = ("_buckets", "_due", "_everything", "_filing", "_moved", "_size", "_stale",
                 "_watch")

    def __init__(
        self,
        filing: Callable[[str], Filing],
        everything: Callable[[], Iterable[tuple[str, Filing]]],
        size: Callable[[], int],
    ) -> None:
        self._filing = filing
        self._everything = everything
        self._size = size
        self._buckets: dict[_Bucket, SortedKeys] = {}
        self._watch = SortedKeys()
        self._due = SortedKeys()
        self._moved: dict[str, Filing | None] = {}
        self._stale = False

    def added(self, correlation_id: str) -> None:
        """Note a saga that is new since the last sync (not filed yet)."""
        if not self._stale and correlation_id not in self._moved:
            self._moved[correlation_id] = None
            self._check_size()

    def moving(self, correlation_id: str) -> None:
        """Note where a saga is filed now, just before it changes (once per sync)."""
        if not self._stale and correlation_id not in self._moved:
            self._moved[correlation_id] = self._filing(correlation_id)
            self._check_size()

    def _check_size(self) -> None:
        if len(self._moved) > _REBUILD_BASE + self._size() // 4:
            self.invalidate()

    def invalidate(self) -> None:
        """Make the next sync a rebuild (after a bulk change such as loading a checkpoint)."""
        self._stale = True
        self._moved.clear()

    def sync(self) -> None:
        """Re-file the sagas that moved since the last sync, or rebuild after a bulk change."""
        if self._stale:
            self._rebuild(self._everything())
            return
        if not self._moved:
            return
        moved, self._moved = self._moved, {}
        filing = self._filing
        for cid, old in moved.items():
            new = filing(cid)
            if new == old:
                continue
            if old is not None:
                self._unfile(cid, old)
            self._file(cid, new)

    def _file(self, cid: str, filing: Filing) -> None:
        started, status, saga, stuck, watch, due = filing
        bucket = self._buckets.get((status, saga, stuck))
        if bucket is None:
            bucket = self._buckets[(status, saga, stuck)] = SortedKeys()
        bucket.add((started, cid))
        if watch is not None:
            self._watch.add((watch, cid))
        if due is not None:
            self._due.add((due, cid))

    def _unfile(self, cid: str, filing: Filing) -> None:
        started, status, saga, stuck, watch, due = filing
        bucket = self._buckets[(status, saga, stuck)]
        bucket.discard((started, cid))
        if not bucket:
            del self._buckets[(status, saga, stuck)]
        if watch is not None:
            self._watch.discard((watch, cid))
        if due is not None:
            self._due.discard((due, cid))

    def _rebuild(self, filings: Iterable[tuple[str, Filing]]) -> None:
        buckets: dict[_Bucket, list[Key]] = {}
        watch: list[Key] = []
        due: list[Key] = []
        for cid, (started, status, saga, stuck, watch_at, due_at) in filings:
            keys = buckets.get((status, saga, stuck))
            if keys is None:
                keys = buckets[(status, saga, stuck)] = []
            keys.append((started, cid))
            if watch_at is not None:
                watch.append((watch_at, cid))
            if due_at is not None:
                due.append((due_at, cid))
        self._buckets = {bucket: SortedKeys(keys) for bucket, keys in buckets.items()}
        self._watch = SortedKeys(watch)
        self._due = SortedKeys(due)
        self._moved.clear()
        self._stale = False

    # --- answers (call sync first) -----------------------------------------------------

    def _admitted(self, query: SagaQuery) -> list[SortedKeys]:
        return [
            keys
            for (status, saga, stuck), keys in self._buckets.items()
            if query.admits(status, saga, stuck)
        ]

    @staticmethod
    def _range(query: SagaQuery) -> tuple[Key | None, Key | None]:
        low = None if query.since_ms is None else (query.since_ms, "")
        high = None if query.until_ms is None else (query.until_ms + 1, "")
        return low, high

    def find(self, query: SagaQuery, limit: int, offset: int) -> list[str]:
        """Return the correlation ids of a page of sagas matching ``query``, newest first."""
        limit, offset = max(0, limit), max(0, offset)
        buckets = self._admitted(query)
        low, high = self._range(query)
        needle = query.search.lower() if query.search else None
        if len(buckets) == 1 and needle is None:
            keys: Iterator[Key] = buckets[0].descending(low, high, skip=offset)
            return [cid for _, cid in islice(keys, limit)]
        keys = heapq.merge(*(keys.descending(low, high) for keys in buckets), reverse=True)
        cids: Iterator[str] = (cid for _, cid in keys)
        if needle is not None:
            cids = (cid for cid in cids if needle in cid.lower())
        return list(islice(cids, offset, offset + limit))

    def count(self, query: SagaQuery) -> int | None:
        """Return how many sagas match ``query``, or None when that needs a scan (a search)."""
        if query.search:
            return None
        low, high = self._range(query)
        total = 0
        for keys in self._admitted(query):
            top = len(keys) if high is None else keys.rank(high)
            total += max(0, top - (0 if low is None else keys.rank(low)))
        return total

    def overdue(self, now_ms: int) -> list[str]:
        """Return the running sagas not yet stuck whose deadline is before ``now_ms``."""
        return [cid for _, cid in self._watch.below((now_ms, ""))]

    def due(self, now_ms: int) -> list[str]:
        """Return the forward-moving, not timed-out sagas whose deadline is before ``now_ms``."""
        return [cid for _, cid in self._due.below((now_ms, ""))]
