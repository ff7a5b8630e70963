"""The memory store: inbox, outbox and nothing else, in dicts, for tests and demos."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Sequence
from itertools import islice, repeat
from operator import itemgetter
from typing import Final

from choreo.errors import ConfigurationError
from choreo.store.base import Migration, Publish
from choreo.store.migrations import check_migrations
from choreo.store.outbox import OutboxRecord

__all__ = ["MemoryStore"]

_ID_OF: Final = itemgetter(0)  # an outbox record's id


class MemoryStore:
    """A :class:`~choreo.store.base.Store` in dicts: nothing survives the process.

    Guarantee: none beyond the process. SIGKILL, a power loss or a lost machine lose the
    inbox and the unsent outbox, so a restarted worker handles redelivered events again
    and emits their (deterministic) ids again. For tests and in-process demos; it cannot
    be shared by replicas and has no database, so handlers get ``ctx.db = None`` and
    migrations are not applied. Writes are staged and applied at :meth:`commit`, so
    :meth:`rollback` undoes them.

    Memory: the inbox remembers, per consumer, the ids handled within the worker's
    ``inbox_retention`` and at most the latest ``max_ids`` of them (it keeps between
    ``max_ids`` and 1.25 x ``max_ids`` and drops the oldest beyond: about 125 bytes per
    uuid-sized id, 12-16 MB per consumer at the default 100,000). A duplicate is dropped
    as long as its id is among those: redeliveries come from offsets not yet committed
    (about a second of records) and outbox replays (none: a restarted process has an
    empty store).
    """

    durable = False
    shared = False
    dialect = "memory"
    paramstyle = "qmark"

    def __init__(self, *, allow_replicas: bool = False, max_ids: int = 100_000) -> None:
        """Create an empty store whose inbox remembers at least ``max_ids`` ids per consumer.

        ``allow_replicas=True`` lets a worker on it join a group with other live members
        (each with its own memory store: nothing is shared, so only tests that study the
        hand-over of partitions between replicas should ask for it).
        """
        if max_ids < 1:
            raise ConfigurationError("MemoryStore max_ids must be at least 1")
        self.allow_replicas = allow_replicas
        self.max_ids = max_ids
        self._trim_above = max_ids + max_ids // 4  # trimmed in bulk: amortised O(1) an id
        self._lock = threading.RLock()
        self._handled: dict[str, dict[str, int]] = {}
        self._outbox: dict[str, dict[str, OutboxRecord]] = {}  # origin -> id -> record
        self._staged_handled: list[tuple[str, Sequence[str], int]] = []
        self._staged_outbox: list[tuple[str, Sequence[OutboxRecord]]] = []
        self._staged_sent: list[Sequence[str]] = []

    @property
    def connection(self) -> None:
        """Return None: a memory store has no database to share with handlers."""
        return None

    def begin(self) -> None:
        """Take the lock and start staging writes."""
        self._lock.acquire()
        self._staged_handled, self._staged_outbox, self._staged_sent = [], [], []

    def commit(self) -> None:
        """Apply the staged writes and release the lock."""
        try:  # dict-level updates: no Python loop per id on the worker's hot path
            for consumer, ids, at in self._staged_handled:
                handled = self._handled.setdefault(consumer, {})
                handled.update(zip(ids, repeat(at)))
                if len(handled) > self._trim_above:  # keep the latest max_ids (in order)
                    excess = len(handled) - self.max_ids
                    self._handled[consumer] = dict(islice(handled.items(), excess, None))
            for sent in self._staged_sent:
                for box in self._outbox.values():  # one per origin: a store has a few
                    deque(map(box.pop, sent, repeat(None)), maxlen=0)
            for origin, records in self._staged_outbox:
                box = self._outbox.setdefault(origin, {})
                box.update(zip(map(_ID_OF, records), records, strict=True))
        finally:
            self._staged_handled, self._staged_outbox, self._staged_sent = [], [], []
            self._lock.release()

    def rollback(self) -> None:
        """Drop the staged writes and release the lock."""
        self._staged_handled, self._staged_outbox, self._staged_sent = [], [], []
        self._lock.release()

    def savepoint(self) -> None:
        """Do nothing: handlers have no database here."""

    def release_savepoint(self) -> None:
        """Do nothing: handlers have no database here."""

    def rollback_to_savepoint(self) -> None:
        """Do nothing: handlers have no database here."""

    def seen(self, consumer: str, event_ids: Collection[str]) -> set[str]:
        """Return the ids among ``event_ids`` that ``consumer`` has already handled."""
        handled = self._handled.get(consumer)
        if not handled:
            return set()
        return handled.keys() & event_ids

    def add(self, consumer: str, event_ids: Sequence[str], handled_at_ms: int) -> None:
        """Stage ``event_ids`` as handled by ``consumer``."""
        if event_ids:
            self._staged_handled.append((consumer, event_ids, handled_at_ms))

    def enqueue(self, origin: str, records: Sequence[OutboxRecord]) -> None:
        """Stage records to publish."""
        if records:
            self._staged_outbox.append((origin, records))

    def mark_sent(self, ids: Sequence[str]) -> None:
        """Stage the removal of acknowledged records."""
        if ids:
            self._staged_sent.append(ids)

    def pending(self, origin: str) -> list[OutboxRecord]:
        """Return ``origin``'s unsent records in the order they were stored."""
        with self._lock:
            return list(self._outbox.get(origin, {}).values())

    def outbox_size(self, origin: str) -> int:
        """Return how many of ``origin``'s records are unsent."""
        with self._lock:
            return len(self._outbox.get(origin, {}))

    def relay(self, origin: str, *, min_age_ms: int, limit: int, publish: Publish) -> int:
        """Return 0: every record of a memory store was written by its own process."""
        return 0

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        """Check the migrations and apply none (there are no tables); return []."""
        check_migrations(component, migrations)
        return []

    def prune(self, consumer: str, older_than_ms: int) -> int:
        """Forget ``consumer``'s ids handled before ``older_than_ms`` (applied at once)."""
        handled = self._handled.get(consumer, {})
        old = [event_id for event_id, at in handled.items() if at < older_than_ms]
        for event_id in old:
            del handled[event_id]
        return len(old)

    def close(self) -> None:
        """Do nothing: the dicts go away with the object."""
