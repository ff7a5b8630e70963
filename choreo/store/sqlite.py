"""The SQLite store: a service's inbox, outbox and own tables in one embedded database file.

The default store for one replica per service. It is not shared: two processes on one file
would serialise on its write lock, and two replicas on two machines would each hold a
separate copy of the service's state, so a worker refuses to start with it while another
member of its consumer group is alive (see :mod:`choreo.store.guard`). Use
:class:`~choreo.store.postgres.PostgresStore` for several replicas.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Final, Literal

from choreo.errors import ConfigurationError
from choreo.model.envelope import now_ms
from choreo.store.base import CHOREO_COMPONENT, Migration, Publish
from choreo.store.migrations import apply_migrations
from choreo.store.outbox import OutboxRecord, pack_headers, unpack_headers

__all__ = ["SQLITE_MIGRATIONS", "Durability", "SqliteStore"]

logger = logging.getLogger(__name__)

_CHUNK: Final = 512  # stays under SQLite's oldest limit on bound parameters (999)

Durability = Literal["full", "normal", "off"]

SQLITE_MIGRATIONS: Final = (
    Migration(
        1,
        "inbox and outbox",
        [
            """CREATE TABLE IF NOT EXISTS choreo_inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                handled_at INTEGER NOT NULL,
                PRIMARY KEY (consumer, event_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX IF NOT EXISTS choreo_inbox_age ON choreo_inbox (consumer, handled_at)",
            """CREATE TABLE IF NOT EXISTS choreo_outbox (
                origin TEXT NOT NULL,
                seq INTEGER NOT NULL,
                id TEXT NOT NULL,
                topic TEXT NOT NULL,
                key BLOB,
                value BLOB,
                headers BLOB NOT NULL,
                PRIMARY KEY (origin, seq)
            ) WITHOUT ROWID""",
        ],
    ),
    Migration(
        2,
        "outbox rows know their writer and age (for the relay)",
        [
            "ALTER TABLE choreo_outbox ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE choreo_outbox ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0",
        ],
    ),
)
"""choreo's own tables on SQLite, versioned in ``choreo_schema_version``."""

_SYNCHRONOUS: Final = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}


def _connect(path: str, timeout: float) -> sqlite3.Connection:
    """Open the database file ``path``, or raise ConfigurationError saying why it cannot be.

    A ``sqlite:///x/y.db`` URL names the relative path ``x/y.db``; an absolute path needs
    four slashes (``sqlite:////x/y.db``), and a missing directory is the usual cause.
    """
    try:
        return sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        where = Path(path).resolve(strict=False)
        reason = (
            f"its directory {str(where.parent)!r} does not exist"
            if not where.parent.is_dir()
            else str(exc)
        )
        raise ConfigurationError(
            f"cannot open the SQLite store {str(where)!r}: {reason} (sqlite:///x.db is a path "
            "relative to the working directory, sqlite:////abs/x.db an absolute one)"
        ) from None


class SqliteStore:
    """A durable :class:`~choreo.store.base.Store` in one SQLite file (WAL journal).

    Guarantee, with the default ``durability="full"`` (``synchronous=FULL``: the WAL is
    fsynced at every commit): a committed batch (inbox rows, outbox rows, the handlers'
    writes) survives SIGKILL of the process and a power loss or OS crash of the machine;
    a lost machine (its disk gone) loses everything in the file, so keep it on durable
    storage or use PostgreSQL with a replica. ``durability="normal"`` trades that for
    speed: still safe against SIGKILL, but a power loss may drop the last committed
    batches (they are then redelivered by Kafka and handled again, with the same emitted
    ids); ``"off"`` may corrupt the file on a power loss (tests and benchmarks only).

    One replica only (``shared`` is False). Handlers get the connection as ``ctx.db``
    (paramstyle ``qmark``) and write their own tables in the batch's transaction: they
    must not call ``commit()`` or ``rollback()`` on it. ``path`` may be ``":memory:"`` for
    a throwaway database. choreo's tables are created and migrated when the store opens.
    """

    durable = True
    shared = False
    dialect = "sqlite"
    paramstyle = "qmark"

    def __init__(
        self, path: str | Path, *, timeout: float = 30.0, durability: Durability = "full"
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"durability must be one of {', '.join(_SYNCHRONOUS)}, not {durability!r}"
            )
        self.path = str(path)
        self.durability = durability
        self.owner = uuid.uuid4().hex
        self._lock = threading.RLock()
        self._conn = _connect(self.path, timeout)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[durability]}")
        self.migrate(CHOREO_COMPONENT, SQLITE_MIGRATIONS)
        self._seen_sql: dict[int, str] = {}
        self._seqs: dict[str, tuple[str, int]] = {}  # outbox id -> (origin, seq) known here
        self._last_seq: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, durability={self.durability!r})"

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
        """Return the ids among ``event_ids`` that ``consumer`` has already handled.

        The ids are looked up in chunks whose ``IN`` lists have a power-of-two length (the
        last id repeated to fill one), so the connection prepares at most ten distinct
        statements: one per batch size would fill sqlite3's statement cache with up to
        128 of them, about 10 MB of SQLite memory at 500-record batches.
        """
        ids = list(event_ids)
        found: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            size = 1 << (len(chunk) - 1).bit_length()
            sql = self._seen_sql.get(size)
            if sql is None:
                marks = ",".join("?" * size)
                sql = self._seen_sql[size] = (
                    "SELECT event_id FROM choreo_inbox WHERE consumer = ? "  # noqa: S608
                    f"AND event_id IN ({marks})"
                )
            chunk += chunk[-1:] * (size - len(chunk))
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
        owner, created = self.owner, now_ms()
        rows = []
        for seq, r in enumerate(records, first):
            rows.append((origin, seq, r[0], r[1], r[2], r[3], pack_headers(r[4]), owner, created))
            seqs[r[0]] = (origin, seq)
        self._last_seq[origin] = first + len(records) - 1
        self._conn.executemany(
            "INSERT INTO choreo_outbox (origin, seq, id, topic, key, value, headers, owner,"
            " created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

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

    def outbox_size(self, origin: str) -> int:
        """Return how many of ``origin``'s records are unsent."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM choreo_outbox WHERE origin = ?", (origin,)
            ).fetchone()
        return int(row[0])

    def relay(self, origin: str, *, min_age_ms: int, limit: int, publish: Publish) -> int:
        """Publish ``origin``'s records written by another store object (an earlier run).

        The file has one live writer (this process), so no claim is needed: the records
        are read, published, then deleted in a transaction of their own.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id, topic, key, value, headers FROM choreo_outbox"
                " WHERE origin = ? AND owner <> ? AND created_ms <= ? ORDER BY seq LIMIT ?",
                (origin, self.owner, now_ms() - min_age_ms, limit),
            ).fetchall()
        if not rows:
            return 0
        publish([OutboxRecord(r[1], r[2], r[3], r[4], unpack_headers(r[5])) for r in rows])
        self.begin()
        try:
            self._conn.executemany(
                "DELETE FROM choreo_outbox WHERE origin = ? AND seq = ?",
                [(origin, r[0]) for r in rows],
            )
        except BaseException:
            self.rollback()
            raise
        self.commit()
        return len(rows)

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        """Apply ``component``'s new migrations in one ``BEGIN IMMEDIATE`` transaction."""
        self.begin()
        try:
            applied = apply_migrations(self._conn, self.dialect, component, migrations, now_ms())
        except BaseException:
            self.rollback()
            raise
        self.commit()
        return applied

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
