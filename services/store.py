"""A service's own SQLite state: its tables, and the connection a handler writes through.

When the runtime hands the handler a SQLite connection (``ctx.db``: the inbox's connection),
the service writes its state through it, so the state change and the inbox record commit in
one transaction: a crash leaves either both or neither. Otherwise (the memory inbox, unit
tests) the store uses its own connection and commits when the handler's block ends.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

__all__ = ["Store", "Undo", "now_ms"]


def now_ms() -> int:
    """Return the wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class Store:
    """Base of the services' stores: subclasses list their ``CREATE`` statements in ``SCHEMA``.

    The schema is created lazily on every connection the store is used with (its own, or
    the runtime's), with ``CREATE ... IF NOT EXISTS`` statements run one by one so that a
    transaction the runtime has open is never committed behind its back.
    """

    SCHEMA: ClassVar[Sequence[str]] = ()

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._own: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._ready: dict[int, sqlite3.Connection] = {}
        last = self.SCHEMA[-1].split("EXISTS", 1)[-1] if self.SCHEMA else ""
        self._last_table = last.split("(", 1)[0].strip()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # --- connections -----------------------------------------------------------------

    def _own_connection(self) -> sqlite3.Connection:
        if self._own is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            self._own = conn
        return self._own

    def ensure_schema(self, conn: sqlite3.Connection) -> None:
        """Create this store's tables on ``conn`` unless they exist (never commits).

        Existence is checked on every call (one indexed lookup): a runtime's rollback
        may undo a creation made inside its transaction. The initial rows
        (:meth:`seed`) are inserted along with the tables, in the same transaction.
        """
        if not self.SCHEMA:
            return
        if id(conn) in self._ready and self._has_tables(conn):
            return
        for statement in self.SCHEMA:
            conn.execute(statement)
        self.seed(conn)
        self._ready[id(conn)] = conn  # a strong reference keeps the id from being reused

    def _has_tables(self, conn: sqlite3.Connection) -> bool:
        """Return True when the last table of the schema exists on ``conn``."""
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self._last_table,)
        ).fetchone()
        return row is not None

    def seed(self, conn: sqlite3.Connection) -> None:
        """Insert initial rows once the tables exist (a hook; does nothing by default)."""

    @contextmanager
    def transaction(self, db: Any = None) -> Iterator[sqlite3.Connection]:
        """Yield the connection to write through: ``db`` if it is SQLite, else the store's own.

        On the store's own connection the block commits when it ends and rolls back when it
        raises; on the runtime's connection committing is the runtime's job.
        """
        if isinstance(db, sqlite3.Connection):
            self.ensure_schema(db)
            yield db
            return
        with self._lock:
            conn = self._own_connection()
            self.ensure_schema(conn)
            with conn:
                yield conn

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the store's own connection and return every row."""
        with self._lock:
            conn = self._own_connection()
            self.ensure_schema(conn)
            return list(conn.execute(sql, params).fetchall())

    def close(self) -> None:
        """Close the store's own connection (the runtime's connections are not touched)."""
        with self._lock:
            if self._own is not None:
                self._ready.pop(id(self._own), None)
                self._own.close()
                self._own = None


class Undo(enum.Enum):
    """What a compensation found when asked to undo its step for one order."""

    DONE = "done"
    """Undone by this call, or earlier by this same triggering event (a redelivery)."""
    ALREADY = "already"
    """Undone earlier by another triggering event: the compensation chain went on already."""
    NOTHING = "nothing"
    """This service never did the step for this order: there is nothing to undo."""
