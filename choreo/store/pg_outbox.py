"""The PostgreSQL store's outbox: one row per committed batch, claimed by relays in order.

A batch's records are stored as ONE row (:func:`~choreo.store.outbox.pack_records`), with
their count beside them (rows of versions before 5 also list their ids in an array), so
choreo's outbox work costs one row insert and one row delete per batch whatever its size
(the columns are lz4-compressed where the server has lz4, see :func:`compress_outbox`).
The writer remembers which of its rows hold
which ids, and deletes a row once every record in it was acknowledged (acknowledgements
of whole rows in the order written, the worker's case, are matched row by row); a row
acknowledged in part lists the sent ids in ``sent``, and those records are skipped when
the row is read again.

A relay claims other writers' rows with ``FOR UPDATE SKIP LOCKED`` in ``seq`` order, so
the relays of several replicas share the rows; a claimed row that shares a key
(correlation id) with an older row it could not claim waits for the next round, so one
key's records go out in the order they were stored. The relay reads a row's keys from its
blob: the ``keys`` column (filled by versions before schema version 3) is no longer
written, because building that array cost the server about as much per record as the
blob itself (see :data:`KEYS_FROM_BLOB`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from choreo.store.base import Publish
from choreo.store.outbox import OutboxRecord, pack_records, unpack_records
from choreo.store.pg_pipeline import BYTEA, INT4, INT8, INT8_ARRAY, TEXT, Statement, numbered

__all__ = ["IDS_FROM_BLOB", "KEYS_FROM_BLOB", "OUTBOX_TABLE", "BatchOutbox", "compress_outbox"]

OUTBOX_TABLE: Final = (
    """CREATE TABLE IF NOT EXISTS choreo_outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        origin TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        ids TEXT[] NOT NULL,
        keys BYTEA[] NOT NULL,
        records BYTEA NOT NULL,
        sent TEXT[] NOT NULL DEFAULT '{}')""",
    "CREATE INDEX IF NOT EXISTS choreo_outbox_origin ON choreo_outbox (origin, seq)",
    # a batch row is written once and read at most once: compressing it costs CPU for
    # nothing (pglz on ~100 KB per 500 records)
    "ALTER TABLE choreo_outbox ALTER COLUMN records SET STORAGE EXTERNAL",
    "ALTER TABLE choreo_outbox ALTER COLUMN ids SET STORAGE EXTERNAL",
    "ALTER TABLE choreo_outbox ALTER COLUMN keys SET STORAGE EXTERNAL",
)
"""choreo's outbox table on PostgreSQL (part of the first migration)."""

_HAS_LZ4 = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"


def compress_outbox(conn: Any, dialect: str) -> None:
    """Store outbox batches compressed with lz4 when the server was built with it.

    lz4 costs the server a fraction of what moving the uncompressed batch through TOAST
    and the WAL does (a 500-record batch shrinks about threefold); pglz, the only other
    choice, costs more than it saves, so without lz4 the columns stay uncompressed.
    """
    row = conn.execute(_HAS_LZ4).fetchone()
    if row is None or not row[0]:
        return
    for column in ("records", "ids", "keys"):
        conn.execute(
            f"ALTER TABLE choreo_outbox ALTER COLUMN {column} SET STORAGE EXTENDED,"
            f" ALTER COLUMN {column} SET COMPRESSION lz4"
        )


KEYS_FROM_BLOB: Final = (
    # rows of earlier versions keep their keys; new rows leave the column empty and the
    # relay reads the keys from the blob (which always held them)
    "ALTER TABLE choreo_outbox ALTER COLUMN keys SET DEFAULT '{}'",
)
"""Schema version 3: the outbox's ``keys`` column is no longer written."""

IDS_FROM_BLOB: Final = (
    # rows of earlier versions keep their ids (and size NULL); new rows leave the array
    # empty and store their record count: the ids are in the blob
    "ALTER TABLE choreo_outbox ALTER COLUMN ids SET DEFAULT '{}'",
    "ALTER TABLE choreo_outbox ADD COLUMN IF NOT EXISTS size INTEGER",
)
"""Schema version 5: the outbox's ``ids`` column is no longer written (``size`` instead).

The array cost the server about a quarter of a batch row's storage (a 36-character id
per record barely compresses) for the rare acknowledgement of ids another store object
wrote; that one now reads the blobs (:meth:`BatchOutbox.write`).
"""

OUTBOX_SIZE: Final = (
    "SELECT COALESCE(SUM(CASE WHEN size IS NULL"
    " THEN (SELECT COUNT(*) FROM unnest(ids) AS i WHERE NOT i = ANY(sent))"
    " ELSE size - cardinality(sent) END), 0) FROM choreo_outbox WHERE origin = %s"
)
"""How many of an origin's records are unsent: ``sent`` of a row of version 5 lists only
its own ids, once each; one of an earlier row may list ids of other rows."""

_INSERT = (
    "INSERT INTO choreo_outbox (origin, owner, created_ms, size, records)"
    " VALUES (%s, %s, %s, %s, %b) RETURNING seq"
)
_DELETE = "DELETE FROM choreo_outbox WHERE seq = ANY(%s)"
_INSERT_RAW: Final = numbered(_INSERT)
_INSERT_TYPES: Final = (TEXT, TEXT, INT8, INT4, BYTEA)
_INSERT_FORMATS: Final = (0, 0, 0, 0, 1)
_DELETE_RAW: Final = numbered(_DELETE)
_SENT_PART = (
    "UPDATE choreo_outbox SET sent = ARRAY(SELECT DISTINCT unnest(sent || %s::text[]))"
    " WHERE seq = %s"
)
# rows of versions before 5 (ids in their array)
_SENT_UNKNOWN = (
    "UPDATE choreo_outbox SET sent = sent || ARRAY("
    "SELECT unnest(ids) INTERSECT SELECT unnest(%s::text[]) EXCEPT SELECT unnest(sent))"
    " WHERE ids && %s::text[]"
)
_DELETE_DONE = "DELETE FROM choreo_outbox WHERE ids && %s::text[] AND ids <@ sent"
# rows of version 5 (ids in their blob)
_WITH_SIZE = "SELECT seq, records FROM choreo_outbox WHERE size IS NOT NULL"
_DELETE_FULL = "DELETE FROM choreo_outbox WHERE seq = ANY(%s) AND cardinality(sent) >= size"
# other writers' rows once old enough; this object's rows under an owner id it retired at
# once (their writer is this object, which will not publish them); never a tracked row
_CLAIM = (
    "SELECT seq, records, sent FROM choreo_outbox"
    " WHERE origin = %s AND NOT (seq = ANY(%s))"
    " AND ((owner <> %s AND created_ms <= %s) OR owner = ANY(%s))"
    " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
)
_RETIRED_KEPT: Final = 64  # owner ids a BatchOutbox remembers having retired
_OLDER = (
    "SELECT seq, records FROM choreo_outbox WHERE origin = %s AND seq < %s"
    " AND NOT (seq = ANY(%s)) ORDER BY seq"
)
_ROWS_PER_CLAIM: Final = 20


class BatchOutbox:
    """The outbox rows one :class:`~choreo.store.postgres.PostgresStore` object writes."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._retired: list[str] = []  # earlier owner ids of this object (see new_owner)
        self._rows: dict[int, list[str]] = {}  # seq -> ids of a row not fully acknowledged
        # the seqs of ``_rows``, replaced whole after each commit: read by the relay thread,
        # which must not take a row this object publishes itself (whatever its owner id)
        self._tracked: list[int] = []
        self._acked: dict[int, set[str]] = {}  # seq -> ids acknowledged of a row (in part)

    def write(
        self,
        conn: Any,
        staged: Sequence[tuple[str, Sequence[OutboxRecord]]],
        sent: Sequence[str],
        created_ms: int,
        deleted: Sequence[int] = (),
    ) -> Callable[[], None]:
        """Send the inserts and deletes of one transaction; return what to run after COMMIT.

        Runs inside the caller's psycopg pipeline; the returned function records the new
        rows and forgets the deleted ones (``deleted`` too: rows whose deletion was sent
        earlier in the transaction) once the transaction committed.
        """
        done, unknown, part = self._resolve(sent)
        if done:
            conn.execute(_DELETE, (done,))
        for seq, ids in part.items():  # rows acknowledged in part
            conn.execute(_SENT_PART, (ids, seq))
        if unknown:  # ids of rows another store object wrote (a replay, a publisher)
            _ack_unknown(conn, unknown)
        inserted: list[tuple[Any, list[str]]] = []
        for origin, records in staged:
            ids = [r[0] for r in records]
            cursor = conn.execute(_INSERT, self._row(origin, records, created_ms), binary=True)
            inserted.append((cursor, ids))

        def after_commit() -> None:
            rows = [(int(cursor.fetchone()[0]), ids) for cursor, ids in inserted]
            self._committed([*deleted, *done], part, rows)

        return after_commit

    def deletion(self, sent: Sequence[str]) -> tuple[list[Statement], list[int]] | None:
        """Return the statement deleting the rows ``sent`` completes, and their seqs.

        No statement when it completes none. Returns None when ``sent`` acknowledges rows
        in part or rows this object did not write (a replay, a publisher taking over
        leftovers): :meth:`write` does that rarer work. The rows are forgotten by the
        after-commit of :meth:`statements` (given them as ``deleted``).
        """
        done, unknown, part = self._resolve(sent)
        if unknown or part:
            return None
        if not done:
            return [], []
        ints = ",".join(map(str, done))
        return [Statement(_DELETE_RAW, [f"{{{ints}}}".encode()], [INT8_ARRAY])], done

    def statements(
        self,
        staged: Sequence[tuple[str, Sequence[OutboxRecord]]],
        sent: Sequence[str],
        created_ms: int,
        deleted: Sequence[int] = (),
    ) -> tuple[list[Statement], Callable[[Sequence[Any]], None]] | None:
        """Return :meth:`write`'s statements for a libpq pipeline, and the after-commit.

        The after-commit takes the statements' answers, in order. ``deleted`` are rows
        whose deletion (:meth:`deletion`) was sent earlier in the same transaction.
        Returns None as :meth:`deletion` does.
        """
        planned = self.deletion(sent)
        if planned is None:
            return None
        statements, done = planned
        done = [*deleted, *done]
        written: list[list[str]] = []
        for origin, records in staged:
            written.append([r[0] for r in records])
            origin_, owner, at, size, blob = self._row(origin, records, created_ms)
            params: list[bytes | str | None] = [origin_, owner, b"%d" % at, b"%d" % size, blob]
            statements.append(Statement(_INSERT_RAW, params, _INSERT_TYPES, _INSERT_FORMATS))

        def after_commit(answers: Sequence[Any]) -> None:
            inserts = answers[len(answers) - len(written) :]
            seqs = [int(answer.get_value(0, 0)) for answer in inserts]
            self._committed(done, {}, list(zip(seqs, written, strict=True)))

        return statements, after_commit

    def _row(
        self, origin: str, records: Sequence[OutboxRecord], created_ms: int
    ) -> tuple[str, str, int, int, bytes]:
        """Return the values of one batch row (origin, owner, created, size, records)."""
        size = len({r[0] for r in records})  # ids are unique; ``sent`` lists each once anyway
        return origin, self.owner, created_ms, size, pack_records(records)

    def _committed(
        self, done: list[int], part: dict[int, list[str]], rows: list[tuple[int, list[str]]]
    ) -> None:
        """Record what a committed transaction changed: rows deleted, acked in part, new."""
        for seq in done:
            self._rows.pop(seq, None)
            self._acked.pop(seq, None)
        for seq, ids in part.items():
            self._acked.setdefault(seq, set()).update(ids)
        for seq, ids in rows:
            self._rows[seq] = ids
        self._tracked = list(self._rows)

    def _resolve(self, sent: Sequence[str]) -> tuple[list[int], list[str], dict[int, list[str]]]:
        """Return the rows ``sent`` completes, the ids not known here, the rows it acks in part.

        The common case, ``sent`` being the ids of whole rows in the order they were
        written (the worker acknowledges what it stored, batch by batch), is matched row
        by row without a lookup per id.
        """
        sent = list(sent)
        done: list[int] = []
        position = 0
        for seq, ids in self._rows.items():
            end = position + len(ids)
            if seq in self._acked or sent[position:end] != ids:
                break
            done.append(seq)
            position = end
        if position == len(sent):
            return done, [], {}
        row_of: dict[str, int] = {}
        for seq, ids in self._rows.items():
            acked = self._acked.get(seq, ())
            row_of.update((id_, seq) for id_ in ids if id_ not in acked)
        unknown: list[str] = []
        acks: dict[int, list[str]] = {}
        for id_ in dict.fromkeys(sent):
            owner = row_of.get(id_)
            if owner is None:
                unknown.append(id_)
            else:
                acks.setdefault(owner, []).append(id_)
        done = []
        part: dict[int, list[str]] = {}
        for seq, ids in acks.items():
            if len(ids) + len(self._acked.get(seq, ())) >= len(self._rows[seq]):
                done.append(seq)
            else:
                part[seq] = ids
        return done, unknown, part

    @staticmethod
    def pending(conn: Any, origin: str) -> list[OutboxRecord]:
        """Return ``origin``'s unsent records (every writer's) in the order they were stored."""
        rows = conn.execute(
            "SELECT records, sent FROM choreo_outbox WHERE origin = %s ORDER BY seq", (origin,)
        ).fetchall()
        return [record for blob, sent in rows for record in _unsent(blob, sent)]

    def new_owner(self, owner: str) -> None:
        """Write later rows as ``owner``; rows left under the current id go to the relay.

        The untracked rows of a retired id (a COMMIT whose answer was lost committed one)
        are relayed without waiting for the minimum age: no live writer will publish them.
        """
        self._retired = [*self._retired[-(_RETIRED_KEPT - 1) :], self.owner]
        self.owner = owner

    def relay(self, conn: Any, origin: str, cutoff_ms: int, publish: Publish) -> int:
        """Claim, publish and delete other writers' rows stored by ``cutoff_ms``; in key order.

        A row this object still tracks is never taken, whatever its owner id (it writes
        under a new one after a failed COMMIT): its writer publishes and deletes it; an
        untracked row of an id it retired is taken at once, whatever its age. Runs
        in the caller's transaction (the claim's locks last until it ends). Returns how
        many records were published.
        """
        claim = (origin, self._tracked, self.owner, cutoff_ms, self._retired, _ROWS_PER_CLAIM)
        rows = conn.execute(_CLAIM, claim).fetchall()
        if not rows:
            return 0
        seqs = [row[0] for row in rows]
        others = conn.execute(_OLDER, (origin, seqs[-1], seqs)).fetchall()
        blocked: set[bytes] = set()
        taken: list[int] = []
        records: list[OutboxRecord] = []
        for seq, blob, sent in rows:
            while others and others[0][0] < seq:  # rows older than this one, held elsewhere
                blocked |= _keys(unpack_records(bytes(others.pop(0)[1])))
            row = unpack_records(bytes(blob))
            row_keys = _keys(row)
            if row_keys & blocked:  # an older row of one of its keys is held elsewhere
                blocked |= row_keys
                continue
            taken.append(seq)
            records.extend(_unsent(row, sent))
        if not taken:
            return 0
        publish(records)
        conn.execute(_DELETE, (taken,))
        return len(records)


def _ack_unknown(conn: Any, unknown: list[str]) -> None:
    """Record acknowledged ids of rows another store object wrote; delete completed rows.

    Rows of earlier versions are matched on their ``ids`` array; rows of version 5 are
    read (their blobs unpacked here): the rare case of a replay or a publisher taking
    over leftovers, not the worker's batch-by-batch acknowledgement.
    """
    conn.execute(_SENT_UNKNOWN, (unknown, unknown))
    conn.execute(_DELETE_DONE, (unknown,))
    wanted = set(unknown)
    touched: list[int] = []
    for seq, blob in conn.execute(_WITH_SIZE).fetchall():
        acked = [record[0] for record in unpack_records(bytes(blob)) if record[0] in wanted]
        if acked:
            conn.execute(_SENT_PART, (acked, seq))
            touched.append(seq)
    if touched:
        conn.execute(_DELETE_FULL, (touched,))


def _keys(records: Sequence[OutboxRecord]) -> set[bytes]:
    """Return the keys of ``records`` (a record without a key orders with nothing)."""
    return {record[2] for record in records if record[2]}


def _unsent(blob: Any, sent: Sequence[str]) -> list[OutboxRecord]:
    """Return the records of a row (its blob, or the blob unpacked) not in its ``sent`` list."""
    records = blob if isinstance(blob, list) else unpack_records(bytes(blob))
    if not sent:
        return records
    done = set(sent)
    return [record for record in records if record[0] not in done]
