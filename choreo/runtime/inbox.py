"""Inbox stores: the event ids a consumer has handled, and the outbox of records to publish.

The worker handles each polled batch in one local transaction of an :class:`Inbox`: it
skips the events whose ids are already recorded, records the new ones, and stores what the
batch emits in the outbox, then commits once. Publishing happens after the commit, and a
record leaves the outbox only once the broker has acknowledged it, so a crash at any point
loses nothing; at worst a record is published twice under the same event id, and the
consumer's inbox drops the copy.

:class:`SqliteInbox` is durable (one SQLite file, WAL, ``synchronous=NORMAL``) and hands its
connection to handlers as ``ctx.db``, so a service's own tables commit atomically with the
inbox. :class:`MemoryInbox` keeps everything in dicts, for tests and in-process demos.
Other stores plug in through the :class:`Inbox` protocol.

Both stores are safe to share between threads (a worker and a
:class:`~choreo.runtime.publisher.Publisher`, say): :meth:`Inbox.begin` takes a lock that
:meth:`Inbox.commit` or :meth:`Inbox.rollback` releases, so transactions never interleave.
Rows are namespaced by consumer group (inbox) and origin (outbox), so several services
may share one store.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Collection, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from choreo.runtime.outbox import OutboxRecord, pack_headers, unpack_headers

__all__ = ["Inbox", "MemoryInbox", "SqliteInbox"]

logger = logging.getLogger(__name__)

_ID_OF: Final = itemgetter(0)  # an outbox record's id
_CHUNK: Final = 900  # stays under SQLite's oldest limit on bound parameters (999)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS choreo_inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    handled_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS choreo_inbox_age ON choreo_inbox (consumer, handled_at);
CREATE TABLE IF NOT EXISTS choreo_outbox (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB,
    headers BLOB NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
"""


@runtime_checkable
class Inbox(Protocol):
    """A transactional store of handled event ids and of records waiting to be published.

    Writes happen between :meth:`begin` and :meth:`commit` (or :meth:`rollback`); the
    savepoint methods bracket one handler attempt so a failed attempt's writes to
    :attr:`connection` are undone without losing the rest of the batch.
    """

    durable: bool
    """True when committed rows survive a crash of the process."""

    @property
    def connection(self) -> Any:
        """Return what handlers get as ``ctx.db`` (a DB connection), or None."""
        ...

    def begin(self) -> None:
        """Begin a transaction (and hold the store's lock until commit or rollback)."""
        ...

    def commit(self) -> None:
        """Commit the transaction and release the lock."""
        ...

    def rollback(self) -> None:
        """Undo the transaction and release the lock."""
        ...

    def savepoint(self) -> None:
        """Mark the start of one handler attempt inside the transaction."""
        ...

    def release_savepoint(self) -> None:
        """Keep the writes made since :meth:`savepoint`."""
        ...

    def rollback_to_savepoint(self) -> None:
        """Undo the writes made since :meth:`savepoint`."""
        ...

    def seen(self, consumer: str, event_ids: Collection[str]) -> set[str]:
        """Return the ids among ``event_ids`` that ``consumer`` has already handled."""
        ...

    def add(self, consumer: str, event_ids: Sequence[str], handled_at_ms: int) -> None:
        """Record ``event_ids`` as handled by ``consumer``."""
        ...

    def enqueue(self, origin: str, records: Sequence[OutboxRecord]) -> None:
        """Store records to publish, after ``origin``'s earlier ones (ids are unique)."""
        ...

    def mark_sent(self, ids: Sequence[str]) -> None:
        """Remove the records with these ids from the outbox: they were acknowledged."""
        ...

    def pending(self, origin: str) -> list[OutboxRecord]:
        """Return ``origin``'s unsent records in the order they were stored."""
        ...

    def prune(self, consumer: str, older_than_ms: int) -> int:
        """Forget ``consumer``'s inbox rows handled before ``older_than_ms``; return how many."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class MemoryInbox:
    """An :class:`Inbox` in dicts: nothing survives the process (tests, in-process demos).

    Writes are staged and applied at :meth:`commit`, so :meth:`rollback` undoes them.
    """

    durable = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._handled: dict[str, dict[str, int]] = {}
        self._outbox: dict[str, dict[str, OutboxRecord]] = {}  # origin -> id -> record
        self._staged_handled: list[tuple[str, Sequence[str], int]] = []
        self._staged_outbox: list[tuple[str, Sequence[OutboxRecord]]] = []
        self._staged_sent: list[Sequence[str]] = []

    @property
    def connection(self) -> None:
        """Return None: a memory inbox has no database to share with handlers."""
        return None

    def begin(self) -> None:
        """Take the lock and start staging writes."""
        self._lock.acquire()
        self._staged_handled, self._staged_outbox, self._staged_sent = [], [], []

    def commit(self) -> None:
        """Apply the staged writes and release the lock."""
        try:  # dict-level updates: no Python loop per id on the worker's hot path
            for consumer, ids, at in self._staged_handled:
                self._handled.setdefault(consumer, {}).update(dict.fromkeys(ids, at))
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

    def prune(self, consumer: str, older_than_ms: int) -> int:
        """Forget ``consumer``'s ids handled before ``older_than_ms`` (applied at once)."""
        handled = self._handled.get(consumer, {})
        old = [event_id for event_id, at in handled.items() if at < older_than_ms]
        for event_id in old:
            del handled[event_id]
        return len(old)

    def close(self) -> None:
        """Do nothing: the dicts go away with the object."""


class SqliteInbox:
    """A durable :class:`Inbox` in one SQLite file (WAL, ``synchronous=NORMAL``).

    Handlers get the connection as ``ctx.db`` and write their own tables in the batch's
    transaction: they must not call ``commit()`` or ``rollback()`` on it. ``path`` may be
    ``":memory:"`` for a throwaway database.
    """

    durable = True

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._seen_sql: dict[int, str] = {}
        self._seqs: dict[str, tuple[str, int]] = {}  # outbox id -> (origin, seq) known here
        self._last_seq: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"SqliteInbox({self.path!r})"

    @property
    def connection(self) -> sqlite3.Connection:
        """Return the SQLite connection handlers share (``ctx.db``)."""
        return self._conn

    def begin(self) -> None:
        """Take the lock and begin an immediate (writing) transaction."""
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def commit(self) -> None:
        """Commit and release the lock."""
        try:
            self._conn.execute("COMMIT")
        finally:
            self._lock.release()

    def rollback(self) -> None:
        """Roll back (if a transaction is open) and release the lock."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        finally:
            self._lock.release()

    def savepoint(self) -> None:
        """Open the savepoint of one handler attempt."""
        self._conn.execute("SAVEPOINT choreo_handler")

    def release_savepoint(self) -> None:
        """Keep the handler attempt's writes."""
        self._conn.execute("RELEASE choreo_handler")

    def rollback_to_savepoint(self) -> None:
        """Undo the handler attempt's writes."""
        self._conn.execute("ROLLBACK TO choreo_handler")
        self._conn.execute("RELEASE choreo_handler")

    def seen(self, consumer: str, event_ids: Collection[str]) -> set[str]:
        """Return the ids among ``event_ids`` that ``consumer`` has already handled."""
        ids = list(event_ids)
        found: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            sql = self._seen_sql.get(len(chunk))
            if sql is None:
                marks = ",".join("?" * len(chunk))
                sql = self._seen_sql[len(chunk)] = (
                    "SELECT event_id FROM choreo_inbox WHERE consumer = ? "  # noqa: S608
                    f"AND event_id IN ({marks})"
                )
            found.update(row[0] for row in self._conn.execute(sql, (consumer, *chunk)))
        return found

    def add(self, consumer: str, event_ids: Sequence[str], handled_at_ms: int) -> None:
        """Record ``event_ids`` as handled by ``consumer``."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO choreo_inbox (consumer, event_id, handled_at) VALUES (?, ?, ?)",
            [(consumer, event_id, handled_at_ms) for event_id in event_ids],
        )

    def enqueue(self, origin: str, records: Sequence[OutboxRecord]) -> None:
        """Store records to publish, numbered after ``origin``'s earlier ones."""
        if not records:
            return
        row = self._conn.execute(
            "SELECT max(seq) FROM choreo_outbox WHERE origin = ?", (origin,)
        ).fetchone()
        first = (row[0] if row and row[0] is not None else self._last_seq.get(origin, 0)) + 1
        first = max(first, self._last_seq.get(origin, 0) + 1)
        seqs = self._seqs
        rows = []
        for seq, r in enumerate(records, first):
            rows.append((origin, seq, r[0], r[1], r[2], r[3], pack_headers(r[4])))
            seqs[r[0]] = (origin, seq)
        self._last_seq[origin] = first + len(records) - 1
        self._conn.executemany("INSERT INTO choreo_outbox VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def mark_sent(self, ids: Sequence[str]) -> None:
        """Delete acknowledged records from the outbox (a contiguous run in one statement)."""
        seqs = self._seqs
        known: dict[str, list[int]] = {}
        unknown = []
        for record_id in ids:
            found = seqs.pop(record_id, None)
            if found is None:
                unknown.append((record_id,))
            else:
                known.setdefault(found[0], []).append(found[1])
        for origin, numbers in known.items():
            low, high = min(numbers), max(numbers)
            if high - low + 1 == len(numbers):
                self._conn.execute(
                    "DELETE FROM choreo_outbox WHERE origin = ? AND seq BETWEEN ? AND ?",
                    (origin, low, high),
                )
            else:
                self._conn.executemany(
                    "DELETE FROM choreo_outbox WHERE origin = ? AND seq = ?",
                    [(origin, n) for n in numbers],
                )
        if unknown:
            self._conn.executemany("DELETE FROM choreo_outbox WHERE id = ?", unknown)

    def pending(self, origin: str) -> list[OutboxRecord]:
        """Return ``origin``'s unsent records in the order they were stored."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id, topic, key, value, headers FROM choreo_outbox "
                "WHERE origin = ? ORDER BY seq",
                (origin,),
            ).fetchall()
        records = []
        for seq, record_id, topic, key, value, headers in rows:
            self._seqs[record_id] = (origin, seq)
            records.append(OutboxRecord(record_id, topic, key, value, unpack_headers(headers)))
        return records

    def prune(self, consumer: str, older_than_ms: int) -> int:
        """Delete ``consumer``'s inbox rows handled before ``older_than_ms``."""
        cursor = self._conn.execute(
            "DELETE FROM choreo_inbox WHERE consumer = ? AND handled_at < ?",
            (consumer, older_than_ms),
        )
        return cursor.rowcount

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
