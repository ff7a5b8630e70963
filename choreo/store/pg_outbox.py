"""The PostgreSQL store's outbox: one row per committed batch, claimed by relays in order.

A batch's records are stored as ONE row (:func:`~choreo.store.outbox.pack_records`), with
their ids in an array beside them, so choreo's outbox work costs one row insert and
one row delete per batch whatever its size (the columns are lz4-compressed where the
server has lz4, see :func:`compress_outbox`). The writer remembers which of its rows hold
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

__all__ = ["KEYS_FROM_BLOB", "OUTBOX_TABLE", "BatchOutbox", "compress_outbox"]

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

_INSERT = (
    "INSERT INTO choreo_outbox (origin, owner, created_ms, ids, records)"
    " VALUES (%s, %s, %s, %b, %b) RETURNING seq"
)
# the same with the ids sent as one text (split by the server): psycopg dumps a list
# parameter element by element in Python, a string in one copy
_INSERT_JOINED = (
    "INSERT INTO choreo_outbox (origin, owner, created_ms, ids, records)"
    " VALUES (%s, %s, %s, string_to_array(%s, %s), %b) RETURNING seq"
)
_SEPARATOR: Final = "\x1f"  # the ASCII unit separator: never in an id choreo derives
_DELETE = "DELETE FROM choreo_outbox WHERE seq = ANY(%s)"
_SENT_PART = (
    "UPDATE choreo_outbox SET sent = ARRAY(SELECT DISTINCT unnest(sent || %s::text[]))"
    " WHERE seq = %s"
)
_SENT_UNKNOWN = (
    "UPDATE choreo_outbox SET sent = sent || ARRAY("
    "SELECT unnest(ids) INTERSECT SELECT unnest(%s::text[]) EXCEPT SELECT unnest(sent))"
    " WHERE ids && %s::text[]"
)
_DELETE_DONE = "DELETE FROM choreo_outbox WHERE ids && %s::text[] AND ids <@ sent"
_CLAIM = (
    "SELECT seq, records, sent FROM choreo_outbox"
    " WHERE origin = %s AND owner <> %s AND created_ms <= %s"
    " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
)
_OLDER = (
    "SELECT seq, records FROM choreo_outbox WHERE origin = %s AND seq < %s"
    " AND NOT (seq = ANY(%s)) ORDER BY seq"
)
_ROWS_PER_CLAIM: Final = 20


class BatchOutbox:
    """The outbox rows one :class:`~choreo.store.postgres.PostgresStore` object writes."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._rows: dict[int, list[str]] = {}  # seq -> ids of a row not fully acknowledged
        self._acked: dict[int, set[str]] = {}  # seq -> ids acknowledged of a row (in part)

    def write(
        self,
        conn: Any,
        staged: Sequence[tuple[str, Sequence[OutboxRecord]]],
        sent: Sequence[str],
        created_ms: int,
    ) -> Callable[[], None]:
        """Send the inserts and deletes of one transaction; return what to run after COMMIT.

        Runs inside the caller's pipeline; the returned function records the new rows and
        forgets the deleted ones once the transaction committed.
        """
        done, unknown, part = self._resolve(sent)
        if done:
            conn.execute(_DELETE, (done,))
        for seq, ids in part.items():  # rows acknowledged in part
            conn.execute(_SENT_PART, (ids, seq))
        if unknown:  # ids of rows another store object wrote (a replay, a publisher)
            conn.execute(_SENT_UNKNOWN, (unknown, unknown))
            conn.execute(_DELETE_DONE, (unknown,))
        inserted: list[tuple[Any, list[str]]] = []
        for origin, records in staged:
            ids = [r[0] for r in records]
            query, params = _insert(origin, self.owner, created_ms, ids, records)
            cursor = conn.execute(query, params, binary=True)
            inserted.append((cursor, ids))

        def after_commit() -> None:
            for seq in done:
                self._rows.pop(seq, None)
                self._acked.pop(seq, None)
            for seq, ids in part.items():
                self._acked.setdefault(seq, set()).update(ids)
            for cursor, ids in inserted:
                self._rows[int(cursor.fetchone()[0])] = ids

        return after_commit

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

    def relay(self, conn: Any, origin: str, cutoff_ms: int, publish: Publish) -> int:
        """Claim, publish and delete other writers' rows stored by ``cutoff_ms``; in key order.

        Runs in the caller's transaction (the claim's locks last until it ends). Returns
        how many records were published.
        """
        rows = conn.execute(_CLAIM, (origin, self.owner, cutoff_ms, _ROWS_PER_CLAIM)).fetchall()
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


def _insert(
    origin: str, owner: str, created_ms: int, ids: list[str], records: Sequence[OutboxRecord]
) -> tuple[str, tuple[Any, ...]]:
    """Return the INSERT of one batch row (query and parameters, sent in binary)."""
    joined = _SEPARATOR.join(ids)
    blob = pack_records(records)
    if joined.count(_SEPARATOR) >= len(ids) or "" in ids:  # an id that would not survive
        # string_to_array (it holds the separator, or is empty): send the list itself
        return _INSERT, (origin, owner, created_ms, ids, blob)
    return _INSERT_JOINED, (origin, owner, created_ms, joined, _SEPARATOR, blob)


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
