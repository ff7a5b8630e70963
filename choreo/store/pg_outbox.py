"""The PostgreSQL store's outbox: one row per committed batch, claimed by relays in order.

A batch's records are stored as ONE row (:func:`~choreo.store.outbox.pack_records`), with
their ids and keys in arrays beside them, so choreo's outbox work costs one row insert and
one row delete per batch whatever its size. The writer remembers which of its rows hold
which ids, and deletes a row once every record in it was acknowledged; a row acknowledged
in part (rare: the worker acknowledges whole batches) lists the sent ids in ``sent``, and
those records are skipped when the row is read again.

A relay claims other writers' rows with ``FOR UPDATE SKIP LOCKED`` in ``seq`` order, so
the relays of several replicas share the rows; a claimed row that shares a key
(correlation id) with an older row it could not claim waits for the next round, so one
key's records go out in the order they were stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from choreo.store.base import Publish
from choreo.store.outbox import OutboxRecord, pack_records, unpack_records

__all__ = ["OUTBOX_TABLE", "BatchOutbox"]

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

_INSERT = (
    "INSERT INTO choreo_outbox (origin, owner, created_ms, ids, keys, records)"
    " VALUES (%s, %s, %s, %b, %b, %b) RETURNING seq"
)
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
    "SELECT seq, keys, records, sent FROM choreo_outbox"
    " WHERE origin = %s AND owner <> %s AND created_ms <= %s"
    " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
)
_OLDER = (
    "SELECT seq, keys FROM choreo_outbox WHERE origin = %s AND seq < %s"
    " AND NOT (seq = ANY(%s)) ORDER BY seq"
)
_ROWS_PER_CLAIM: Final = 20


class BatchOutbox:
    """The outbox rows one :class:`~choreo.store.postgres.PostgresStore` object writes."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._row_of: dict[str, int] = {}  # record id -> seq of the row holding it
        self._left: dict[int, int] = {}  # seq -> records of the row not yet acknowledged

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
        done, unknown, left = self._resolve(sent)
        if done:
            conn.execute(_DELETE, (done,))
        if left:  # rows acknowledged in part
            part: dict[int, list[str]] = {}
            for id_ in sent:
                seq = self._row_of.get(id_)
                if seq in left:
                    part.setdefault(seq, []).append(id_)
            for seq, ids in part.items():
                conn.execute(_SENT_PART, (ids, seq))
        if unknown:  # ids of rows another store object wrote (a replay, a publisher)
            conn.execute(_SENT_UNKNOWN, (unknown, unknown))
            conn.execute(_DELETE_DONE, (unknown,))
        inserted: list[tuple[Any, Sequence[OutboxRecord]]] = []
        for origin, records in staged:
            cursor = conn.execute(
                _INSERT,
                (
                    origin,
                    self.owner,
                    created_ms,
                    [r[0] for r in records],
                    [r[2] or b"" for r in records],
                    pack_records(records),
                ),
                binary=True,
            )
            inserted.append((cursor, records))

        def after_commit() -> None:
            for id_ in sent:
                self._row_of.pop(id_, None)
            for seq in done:
                self._left.pop(seq, None)
            self._left.update(left)
            for cursor, records in inserted:
                seq = int(cursor.fetchone()[0])
                self._left[seq] = len(records)
                self._row_of.update(dict.fromkeys([r[0] for r in records], seq))

        return after_commit

    def _resolve(self, sent: Sequence[str]) -> tuple[list[int], list[str], dict[int, int]]:
        """Return the rows ``sent`` completes, the ids not known here, the rows' new counts."""
        left: dict[int, int] = {}
        unknown: list[str] = []
        row_of = self._row_of
        for id_ in sent:
            seq = row_of.get(id_)
            if seq is None:
                unknown.append(id_)
            else:
                left[seq] = left.get(seq, self._left.get(seq, 0)) - 1
        done = [seq for seq, count in left.items() if count <= 0]
        for seq in done:
            del left[seq]
        return done, unknown, left

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
        for seq, keys, blob, sent in rows:
            while others and others[0][0] < seq:  # rows older than this one, held elsewhere
                blocked.update(bytes(key) for key in others.pop(0)[1])
            row_keys = {bytes(key) for key in keys} - {b""}
            if row_keys & blocked:  # an older row of one of its keys is held elsewhere
                blocked |= row_keys
                continue
            taken.append(seq)
            records.extend(_unsent(blob, sent))
        if not taken:
            return 0
        publish(records)
        conn.execute(_DELETE, (taken,))
        return len(records)


def _unsent(blob: Any, sent: Sequence[str]) -> list[OutboxRecord]:
    """Return the records of a row's blob whose ids are not in its ``sent`` list."""
    records = unpack_records(bytes(blob))
    if not sent:
        return records
    done = set(sent)
    return [record for record in records if record[0] not in done]
