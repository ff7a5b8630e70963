"""Reading many partitions in record-time order: which to pause, which to resume.

A tracker instance reads one topic per event type. Its consumer fetches every partition
at about the same *byte* rate, so the partitions of rare event types (a decline, a
failure) run far ahead of the common ones in time: a saga's events then arrive spread
over a long stretch of the read, many sagas are open at once, and the tracker's bounds
pack and unpack them again and again. :class:`TimeAlignment` keeps the partitions
together: a partition whose last record's timestamp is more than ``window_ms`` past the
*frontier* (the oldest last timestamp among the partitions still being read) is paused,
and resumed once the frontier has come within ``window_ms`` of it.

Pure logic, no client calls: the caller passes what it polled through :meth:`release`
(which returns what to fold now and holds back records too far past the frontier: a
client fetches ahead, so one poll may span a minute of one partition) and applies what
:meth:`decide` returns with its consumer's ``pause``/``resume``. Rules that keep it from
ever stalling the read:

- a partition that has returned nothing for ``idle_s`` while not paused (caught up with
  its log, or empty) does not hold the frontier back; nor does one that has returned
  nothing yet, or whose records carry no timestamp (those are never held either);
- the partition that defines the frontier is never paused (it is not past itself);
- when no partition defines a frontier (all idle, at the end of the log) every paused
  one is resumed and every held record released; a revoked partition is forgotten
  (:meth:`reset`), its held records dropped (never folded, so never committed).

Pausing and holding change only the order records are folded in: the tracker's fold does
not depend on it, and the committed offsets follow what was folded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from choreo.transports.base import Record, TopicPartition

__all__ = ["BEHIND_MS", "CATCH_UP_CHECK_S", "DEFAULT_IDLE_S", "DEFAULT_WINDOW_MS",
           "IDLE_POLLS", "TimeAlignment", "catching_up"]

DEFAULT_WINDOW_MS: Final = 100
"""How far (record time) a partition may run ahead of the slowest one before it is paused."""
DEFAULT_IDLE_S: Final = 1.0
"""How long a partition may return nothing before it stops holding the others back."""
IDLE_POLLS: Final = 3
"""How many polls with records of others a partition must miss as well to count as idle."""


BEHIND_MS: Final = 10_000
"""A reader whose last record is older than this is catching up with its log."""
CATCH_UP_CHECK_S: Final = 60.0
"""How often a reader that is catching up checks deadlines: a saga whose next event is
in the part not read yet is not stuck, and each check re-files every saga that changed
since the last one (the whole saga index, while a log is being rebuilt)."""


def catching_up(records: Sequence[Record], batch_size: int) -> bool:
    """Return True when a poll says its reader is behind: a full batch, or an old last record.

    A record without a timestamp (below 0) says nothing.
    """
    if len(records) >= batch_size:
        return True
    last_ms = records[-1].timestamp_ms if records else -1
    return last_ms >= 0 and time.time() * 1000 - last_ms > BEHIND_MS


class TimeAlignment:
    """Decides which partitions to pause so records are read about in timestamp order.

    ``window_ms`` is how far a partition's last record time may run ahead of the
    frontier (0 turns alignment off: nothing is ever paused); ``idle_s`` how long a
    partition that returns nothing still counts as being read; ``clock`` returns
    monotonic seconds.
    """

    def __init__(
        self,
        window_ms: int = DEFAULT_WINDOW_MS,
        *,
        idle_s: float = DEFAULT_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_ms < 0 or idle_s <= 0:
            raise ValueError("window_ms must be >= 0 and idle_s > 0")
        self.window_ms = window_ms
        self.idle_s = idle_s
        self.clock = clock
        self.last_ms: dict[TopicPartition, int] = {}
        """The newest record timestamp read from each partition."""
        self.seen: dict[TopicPartition, float] = {}
        """When each partition last returned a record (or was resumed)."""
        self.paused: set[TopicPartition] = set()
        """The partitions paused by :meth:`decide` and not resumed since."""
        self.pauses = 0
        """How many times a partition was paused (for logs and tests)."""
        self._held: dict[tuple[str, int], deque[Record]] = {}
        self._polls = 0
        self._seen_poll: dict[TopicPartition, int] = {}
        self._last_records = clock()

    @property
    def enabled(self) -> bool:
        """True when alignment is on (a positive window)."""
        return self.window_ms > 0

    def observe(self, records: Iterable[Record]) -> None:
        """Note the timestamps of records just read (a timestamp below 0 means none)."""
        if not self.window_ms:
            return
        newest: dict[tuple[str, int], int] = {}
        get = newest.get
        for record in records:
            tp = (record.topic, record.partition)
            at = record.timestamp_ms
            if at > get(tp, -1):
                newest[tp] = at
            elif tp not in newest:
                newest[tp] = -1
        now = self.clock()
        if newest:
            self._polls += 1
            self._last_records = now
        last, seen, seen_poll, polls = self.last_ms, self.seen, self._seen_poll, self._polls
        for (topic, partition), at in newest.items():
            tp = TopicPartition(topic, partition)
            seen[tp] = now
            seen_poll[tp] = polls
            if at > last.get(tp, -1):
                last[tp] = at

    def frontier(self) -> int | None:
        """Return the oldest last timestamp among partitions not idle, or None for none.

        A partition is idle when it returned nothing for ``idle_s`` and, unless no poll
        returned anything for that long, for :data:`IDLE_POLLS` polls that returned
        records of others (a reader slowed down by its machine does not make a partition
        look idle); a paused partition never is.
        """
        now, polls = self.clock(), self._polls
        idle_s, seen, seen_poll, paused = self.idle_s, self.seen, self._seen_poll, self.paused
        quiet = now - self._last_records >= idle_s  # no poll returned anything for idle_s
        times = [
            at for tp, at in self.last_ms.items()
            if tp in paused
            or now - seen.get(tp, now) < idle_s
            or (not quiet and polls - seen_poll.get(tp, polls) < IDLE_POLLS)
        ]
        return min(times, default=None)

    def release(self, records: Sequence[Record]) -> list[Record]:
        """Note ``records`` (see :meth:`observe`); return those to fold now, hold the rest.

        A record more than the window past the frontier waits (with every later record
        of its partition, so each partition's order is kept) until the frontier comes
        close; with no frontier (every partition idle) everything held is returned. A
        client fetches ahead of what is polled, so a single poll can span a minute of one
        partition: pausing stops the next fetch, holding orders what was fetched.
        """
        if not self.window_ms:
            return list(records)
        self.observe(records)
        held = self._held
        front = self.frontier()
        if front is None:
            ready = [record for queue in held.values() for record in queue]
            held.clear()
            ready.extend(records)
            return ready
        limit = front + self.window_ms
        ready = []
        for key in list(held):
            waiting = held[key]
            while waiting and waiting[0].timestamp_ms <= limit:
                ready.append(waiting.popleft())
            if not waiting:
                del held[key]
        for record in records:
            key = (record.topic, record.partition)
            queue = held.get(key)
            if queue is None:
                if record.timestamp_ms <= limit:
                    ready.append(record)
                    continue
                queue = held[key] = deque()
            queue.append(record)
        return ready

    @property
    def held(self) -> int:
        """How many records are held back."""
        return sum(len(queue) for queue in self._held.values())

    def decide(self) -> tuple[list[TopicPartition], list[TopicPartition]]:
        """Return the partitions to pause and those to resume now (and note them as such)."""
        if not self.window_ms:
            return [], []
        front = self.frontier()
        if front is None:
            resume = sorted(self.paused)
            self._resumed(resume)
            return [], resume
        limit = front + self.window_ms
        last, paused = self.last_ms, self.paused
        pause = sorted(tp for tp, at in last.items() if at > limit and tp not in paused)
        resume = sorted(tp for tp in paused if last.get(tp, -1) <= limit)
        self._resumed(resume)
        paused.update(pause)
        self.pauses += len(pause)
        return pause, resume

    def _resumed(self, partitions: list[TopicPartition]) -> None:
        now = self.clock()
        for tp in partitions:
            self.paused.discard(tp)
            self.seen[tp] = now  # give it idle_s to return something before it counts as idle
            self._seen_poll[tp] = self._polls

    def reset(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget partitions (revoked, or newly assigned: a new assignment starts unpaused).

        Their held records are dropped: they were never folded, so the committed offsets
        are below them and the partition's next reader reads them again.
        """
        for tp in partitions:
            self._held.pop((tp.topic, tp.partition), None)
            self.last_ms.pop(tp, None)
            self.seen.pop(tp, None)
            self._seen_poll.pop(tp, None)
            self.paused.discard(tp)
