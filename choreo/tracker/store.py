"""The tracker's checkpoint: offsets per topic-partition and saga summaries, in SQLite.

A restarted tracker loads the summaries (state, times, flags) and the offsets, and reads
each partition from where it stopped instead of from the beginning. A saga's packed
events (:mod:`choreo.tracker.compact`) are stored with it and loaded only when the saga
is looked at or receives a new event. Everything is written in one transaction per
:meth:`CheckpointStore.write` (the tracker batches), in WAL mode with
``synchronous=NORMAL``: a commit costs tens of microseconds instead of hundreds, and a
checkpoint lost to a power cut only makes the restarted tracker re-read (and deduplicate)
a little more.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from choreo.transports.base import TopicPartition

__all__ = ["CheckpointStore", "SagaRow"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS symbols (
    number INTEGER PRIMARY KEY,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sagas (
    correlation_id TEXT PRIMARY KEY,
    saga TEXT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    deadline_ms INTEGER,
    flags INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    events BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SagaRow(NamedTuple):
    """One saga's summary as stored; ``events`` is None when loaded without them."""

    correlation_id: str
    saga: str
    state: str
    status: str
    started_at_ms: int | None
    ended_at_ms: int | None
    deadline_ms: int | None
    flags: int
    event_count: int
    events: bytes | None


class CheckpointStore:
    """A SQLite file (or ``":memory:"``) holding a tracker's checkpoint.

    Thread-safe: every method takes the store's lock, so a feeding thread and readers may
    share one store.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database (further calls fail)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def offsets(self) -> dict[TopicPartition, int]:
        """Return the next offset to read per topic-partition."""
        with self._lock:
            rows = self._db.execute("SELECT topic, partition, next_offset FROM offsets")
            return {TopicPartition(t, p): o for t, p, o in rows}

    def symbols(self) -> list[str]:
        """Return the symbol table the stored events were packed with, in number order."""
        with self._lock:
            rows = self._db.execute("SELECT text FROM symbols ORDER BY number").fetchall()
        return [text for (text,) in rows]

    def counters(self) -> dict[str, int]:
        """Return the tracker's saved counters (records read, ignored, ...)."""
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    def summaries(self) -> Iterator[SagaRow]:
        """Yield every stored saga without its events (``events`` is None)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT correlation_id, saga, state, status, started_at, ended_at,"
                " deadline_ms, flags, event_count FROM sagas"
            ).fetchall()
        for cid, saga, state, status, started, ended, deadline, flags, count in rows:
            yield SagaRow(cid, saga, state, status, started, ended, deadline, flags, count, None)

    def events(self, correlation_id: str) -> bytes | None:
        """Return the packed events of one saga, or None when it is not stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT events FROM sagas WHERE correlation_id = ?", (correlation_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def saga_count(self) -> int:
        """Return how many sagas are stored."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM sagas").fetchone()
        return int(count)

    def write(
        self,
        *,
        offsets: Mapping[TopicPartition, int],
        sagas: Iterable[SagaRow],
        symbols: Iterable[tuple[int, str]] = (),
        counters: Mapping[str, int] | None = None,
    ) -> None:
        """Save offsets, new symbols and changed sagas in one transaction.

        Every row in ``sagas`` must carry its events.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO symbols (number, text) VALUES (?, ?)", symbols
                )
                db.executemany(
                    "INSERT OR REPLACE INTO sagas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (row if row.events is not None else _missing(row) for row in sagas),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                    ((tp.topic, tp.partition, offset) for tp, offset in offsets.items()),
                )
                if counters:
                    db.executemany(
                        "INSERT OR REPLACE INTO counters VALUES (?, ?)", counters.items()
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


def _missing(row: SagaRow) -> SagaRow:
    raise ValueError(f"saga {row.correlation_id} written without its events")
