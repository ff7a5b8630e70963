"""The PostgreSQL store: a service's inbox, outbox and own tables, shared by all its replicas.

Built on psycopg 3 and psycopg_pool (the ``postgres`` extra: ``pip install
choreo[postgres]``). choreo's own work on a polled batch costs two round trips and one
outbox row, whatever the batch size, each round trip one libpq pipeline behind one sync
(:mod:`choreo.store.pg_pipeline`; psycopg's own pipeline would add two more):

- the claim, sent ahead (:meth:`PostgresStore.claim_ahead`, :mod:`choreo.store.pg_claim`):
  ``BEGIN``, the deletion of the outbox rows the broker acknowledged since the last
  batch, and the batch's event ids claimed in the inbox (a plain ``INSERT … SELECT
  unnest(…)`` in a savepoint, their 16-byte keys sent as one binary ``uuid[]``, see
  :mod:`choreo.store.pg_inbox`; when some were handled already the savepoint is rolled
  back and ``ON CONFLICT DO NOTHING`` claims the rest). The worker handles the records
  that need no database while the server works;
- the commit: the batch's outbox row (all its records in one, see
  :mod:`choreo.store.pg_outbox`) and the ``COMMIT``, whose answer the worker's loop reads
  only after the next batch was handled (:meth:`PostgresStore.commit_behind`,
  :mod:`choreo.store.pg_pending`): the next claim goes out behind it.

A handler that uses ``ctx.db`` adds its statements and one
``SAVEPOINT`` per attempt; the savepoint is not waited for: when an attempt is kept, the
``RELEASE`` of its savepoint and the ``SAVEPOINT`` of the next attempt are sent at once
and their answer is read only when the connection is next used, so the round trip
overlaps the runtime's own work between two events (see :meth:`PostgresStore.release_savepoint`).

Why one module of over 500 lines: the batch transaction is one state machine on one
connection (the COMMIT sent behind, the claim sent ahead, the handler's savepoint sent
ahead), and its one invariant, that nothing else runs on the connection while an answer
on it is unread, is kept by the methods together; the SQL, the keys, the outbox rows,
the claim's answer, the pipelines, what a batch stages and the COMMIT's answer live in
their own modules (``pg_inbox``, ``pg_outbox``, ``pg_claim``, ``pg_pipeline``,
``pg_staged``, ``pg_pending``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from choreo.errors import ConfigurationError
from choreo.model.envelope import now_ms
from choreo.safety.redact import redact_text
from choreo.store.base import CHOREO_COMPONENT, Migration, Publish
from choreo.store.migrations import apply_migrations
from choreo.store.outbox import OutboxRecord
from choreo.store.pg_claim import SentClaim, ids_of
from choreo.store.pg_connect import (
    check_url,
    connection_failure,
    register_url_password,
    send_ahead_api,
)
from choreo.store.pg_errors import quiet_lost_connection_warnings
from choreo.store.pg_inbox import (
    HANDLED,
    INBOX_BY_KEY,
    InboxKeys,
    inbox_keys,
    keys_dumper,
)
from choreo.store.pg_outbox import (
    IDS_FROM_BLOB,
    KEYS_FROM_BLOB,
    OUTBOX_SIZE,
    OUTBOX_TABLE,
    BatchOutbox,
    compress_outbox,
)
from choreo.store.pg_pending import PendingCommit
from choreo.store.pg_pipeline import COMMIT, SentStatements
from choreo.store.pg_staged import StagedBatch

__all__ = ["POSTGRES_MIGRATIONS", "PostgresStore"]

logger = logging.getLogger(__name__)

_LOCK_KEY: Final = 0x63686F72656F  # b"choreo": the advisory lock of migrations
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

POSTGRES_MIGRATIONS: Final = (
    Migration(
        1,
        "inbox and outbox",
        [
            """CREATE TABLE IF NOT EXISTS choreo_inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                handled_at BIGINT NOT NULL,
                PRIMARY KEY (consumer, event_id))""",
            # BRIN: rows arrive in handled_at order, so a block-range index serves prune
            # at a fraction of a B-tree's cost per insert
            "CREATE INDEX IF NOT EXISTS choreo_inbox_age ON choreo_inbox USING brin (handled_at)",
            *OUTBOX_TABLE,
        ],
    ),
    Migration(2, "outbox batches compressed with lz4 (where the server has it)", compress_outbox),
    Migration(3, "outbox keys read from the batch blob, not written to a column", KEYS_FROM_BLOB),
    Migration(4, "inbox keyed by one uuid per consumer and event id", INBOX_BY_KEY),
    Migration(5, "outbox ids read from the batch blob, not written to a column", IDS_FROM_BLOB),
)
"""choreo's own tables on PostgreSQL, versioned in ``choreo_schema_version``."""

_NEXT_SAVEPOINT: Final = b"RELEASE SAVEPOINT choreo_handler; SAVEPOINT choreo_handler"


class PostgresStore:
    """A :class:`~choreo.store.base.Store` in a PostgreSQL database, for any number of replicas.

    Guarantee: a committed batch (inbox rows, outbox rows, the handlers' writes) is as
    durable as the server makes a commit: with PostgreSQL's defaults (``fsync=on``,
    ``synchronous_commit=on``) it survives SIGKILL of any replica, a crash or power loss
    of the database machine, and the loss of a replica's machine (nothing of the service
    lives there); the loss of the database machine itself is covered by PostgreSQL's own
    replication. Replicas share everything: each batch first claims its event ids in the
    inbox (a replica handling the same ids at the same moment waits for that transaction
    and then sees them handled), so a handler's writes commit at most once per event;
    the handler locks its business rows as any PostgreSQL code would (``SELECT … FOR
    UPDATE`` or a conditional ``UPDATE``). Outbox rows left by a replica that died are
    published by any live replica's relay (claimed with ``FOR UPDATE SKIP LOCKED``), and so
    is the row of a batch whose COMMIT's answer was lost with the connection, by this
    replica's own relay too (see :meth:`_new_owner`).

    ``url`` is a libpq URL or conninfo (``postgresql://user:password@host:5432/db``); its
    password never appears in a repr, log line or error of choreo. ``schema`` puts
    choreo's and the service's tables in that schema (created if needed) instead of the
    user's search path. Handlers get ``ctx.db``, a psycopg connection inside the batch's
    transaction (paramstyle ``format``, ``%s``; see :mod:`choreo.store.sql`); they must
    not commit or roll it back.
    """

    durable = True
    shared = True
    dialect = "postgresql"
    paramstyle = "format"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 30.0,
    ) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "the PostgreSQL store needs psycopg 3 and psycopg_pool: "
                "pip install 'choreo[postgres]'"
            ) from exc
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(f"schema {schema!r} is not a lower-case SQL identifier")
        check_url(url)
        register_url_password(url)
        quiet_lost_connection_warnings()  # the worker says it once (choreo.store.pg_errors)
        self._psycopg = psycopg
        self._generators = send_ahead_api(psycopg)
        self.url = redact_text(url)
        self.schema = schema
        self._outbox = BatchOutbox(uuid.uuid4().hex)
        self._lock = threading.RLock()
        kwargs: dict[str, Any] = {"autocommit": False}
        self._check_connection(url, schema, timeout)
        if schema is not None:
            kwargs["options"] = f'-c search_path="{schema}"'  # quoted: "order" is a keyword
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            open=False,
            timeout=timeout,
            # a connection the server ended while pooled is replaced, never handed out
            check=ConnectionPool.check_connection,
            configure=_configure,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            self._pool.close()
            raise ConfigurationError(connection_failure(exc, self.url)) from None
        self._conn: Any = None
        self._tx_thread: int | None = None  # the thread whose transaction is open
        self._release_pending = False  # a kept handler savepoint is still open
        self._ahead = False  # the next attempt's savepoint is open, nothing written since
        self._ahead_unread = False  # ... and the server's answer to it is not read yet
        self._sent_claim: SentClaim | None = None  # a claim whose answer is not read yet
        self._staged = StagedBatch()
        self._behind: PendingCommit | None = None  # a COMMIT whose answer is not read yet
        self.migrate(CHOREO_COMPONENT, POSTGRES_MIGRATIONS)

    def __repr__(self) -> str:
        schema = f", schema={self.schema!r}" if self.schema else ""
        return f"PostgresStore({self.url!r}{schema})"

    def _check_connection(self, url: str, schema: str | None, timeout: float) -> None:
        """Connect once, failing fast with libpq's reason, and create ``schema`` unless it exists.

        The pool would retry a refused login or an unreachable server for ``timeout``
        seconds and then only say it timed out. The schema's name was checked to be a
        lower-case identifier; it is quoted, so a keyword (``order``) is a name too.
        ``IF NOT EXISTS`` is not atomic: replicas starting together can both insert the
        schema, and the loser's unique violation means it exists.
        """
        try:
            conn = self._psycopg.connect(url, autocommit=True, connect_timeout=int(timeout))
        except self._psycopg.Error as exc:
            raise ConfigurationError(connection_failure(exc, self.url)) from None
        errors = self._psycopg.errors
        try:
            with conn:
                # another replica creating it at the same moment: it exists
                if schema is not None:
                    with contextlib.suppress(errors.UniqueViolation, errors.DuplicateSchema):
                        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except self._psycopg.Error as exc:
            raise ConfigurationError(
                connection_failure(exc, self.url, what=f"create schema {schema} on")
            ) from None

    # --- the batch transaction ---------------------------------------------------------

    @property
    def connection(self) -> Any:
        """Return the psycopg connection of the current transaction (``ctx.db``).

        A savepoint sent ahead for the next handler attempt is settled first: the caller
        is not that attempt (it calls :meth:`savepoint` first), so its writes must not
        fall inside the savepoint, and the next attempt opens a fresh one.
        """
        if self._behind is not None:
            self.settle_behind()
        if (self._ahead or self._sent_claim is not None) and self._in_transaction():
            self._settle_claim()
            self._settle_ahead()
        return self._conn

    def begin(self) -> None:
        """Take the lock and a connection; the transaction starts with the first statement."""
        self._lock.acquire()
        try:
            if self._conn is None:
                self._conn = self._pool.getconn()
        except BaseException:
            self._lock.release()
            raise
        self._reset_staged()
        self._tx_thread = threading.get_ident()

    def commit(self) -> None:
        """Write the staged inbox and outbox changes and COMMIT, in one pipeline."""
        pending = self.commit_behind()
        self.settle_behind()
        pending.result()

    def commit_behind(self) -> PendingCommit:
        """Send the staged changes and the COMMIT; return before the answer (see pg_pending).

        The answer is read before any other use of the connection, the next batch's claim
        excepted: it goes out behind the COMMIT (:meth:`claim_ahead`), so the server
        commits this batch and claims the next while the worker handles it.
        :meth:`settle_behind` reads it on demand. Where the pipeline is not available
        (this psycopg lacks the calls, or rarer acknowledgements) the batch is committed
        at once.
        """
        conn = self._conn
        try:
            self._settle_claim()  # and the COMMIT of the batch before, if sent behind
            self._read_ahead()
            self._refuse_failed_transaction(conn)
            planned = self._staged.statements(self._outbox, now_ms()) if self._generators else None
            if planned is None:  # the rarer acknowledgements: psycopg's pipeline
                with conn.pipeline():
                    after_commit = self._staged.write(conn, self._outbox, now_ms())
                    conn.commit()
                after_commit()
                return PendingCommit.committed()
            statements, after = planned
            if not statements and not self._in_open_transaction(conn):
                return PendingCommit.committed()  # nothing was written: nothing to commit
            sent = SentStatements(conn, self._generators, [*statements, COMMIT])
        except BaseException:
            self._failed_commit(conn)
            raise
        finally:
            self._reset_staged()
            self._lock.release()
        self._behind = PendingCommit(sent, after, self._behind_failed)
        return self._behind

    def settle_behind(self) -> None:
        """Read the answer to the COMMIT sent behind, if any (see :meth:`commit_behind`)."""
        with self._lock:
            pending = self._behind
            if pending is None:
                return
            self._behind = None
            # the next batch's claim may be queued behind it: then stay in pipeline mode
            claim = self._sent_claim
            pending.settle(leave_pipeline=claim is None or claim.read)

    def _behind_failed(self, error: BaseException) -> None:
        """After a COMMIT sent behind failed (or its answer was lost): as :meth:`commit`'s.

        With the next batch's claim queued behind it, nothing is rolled back now: that
        claim fails (the transaction is aborted) or runs in a new one, and either way is
        rolled back with the batch it claims for.
        """
        claim = self._sent_claim
        self._failed_commit(self._conn, roll_back=claim is None or claim.read)

    def _failed_commit(self, conn: Any, *, roll_back: bool = True) -> None:
        """Leave a failed commit's connection usable: new owner id, roll back, or replace."""
        self._new_owner()  # first: the rollback below may raise too
        try:
            if roll_back and conn is not None and not conn.broken:  # a failed COMMIT
                conn.rollback()  # leaves an aborted transaction behind
        finally:
            self._discard_connection_if_broken()

    def _refuse_failed_transaction(self, conn: Any) -> None:
        """Raise when a statement of the batch failed and nothing rolled it back.

        The server answers a COMMIT of such a transaction with a rollback, not an error:
        the batch would pass as committed with none of its writes (a handler that caught
        the failure of its own statement, say). Raising makes it a failed batch, handled
        again.
        """
        status = self._psycopg.pq.TransactionStatus
        if conn.pgconn.transaction_status == status.INERROR:
            raise self._psycopg.errors.InFailedSqlTransaction(
                "a statement of the batch failed and was not rolled back (a handler that"
                " catches a database error must not go on using ctx.db): the batch is"
                " rolled back and handled again"
            )

    def rollback(self) -> None:
        """Roll back and release the lock."""
        try:
            with contextlib.suppress(self._psycopg.Error):
                self.settle_behind()  # in order: a COMMIT sent behind comes first
            if self._sent_claim is not None:  # its answer is not wanted any more
                self._sent_claim.discard()
            if self._conn is not None and not self._conn.broken:
                # the rollback undoes what the savepoint sent ahead reports, or fails if the
                # link is lost
                with contextlib.suppress(self._psycopg.Error):
                    self._read_ahead()
                self._conn.rollback()
        finally:
            self._discard_connection_if_broken()
            self._reset_staged()
            self._lock.release()

    def _new_owner(self) -> None:
        """Write later outbox rows as a new writer, after a COMMIT that may have committed.

        A COMMIT whose answer never came (the connection lost while it ran) may have
        committed the batch's outbox row all the same; the worker takes the batch as
        failed and never publishes that row itself. Under a new owner id this store's own
        relay takes the row at its next round (without waiting for ``relay_min_age``: its
        writer is this object), so its records go out without waiting for another replica
        or a restart. Rows this object wrote
        under the old id and still tracks (published, their deletion riding on the next
        batch) are its own to finish: its relay never takes them (see
        :meth:`~choreo.store.pg_outbox.BatchOutbox.relay`).
        """
        self._outbox.new_owner(uuid.uuid4().hex)

    @property
    def owner(self) -> str:
        """The id this store writes its outbox rows under (new after a failed COMMIT)."""
        return self._outbox.owner

    def _in_transaction(self) -> bool:
        """Return whether the calling thread has this store's transaction open."""
        return self._conn is not None and self._tx_thread == threading.get_ident()

    def _reset_staged(self) -> None:
        """Forget what the transaction staged (at its end)."""
        self._tx_thread = None
        self._release_pending = self._ahead = self._ahead_unread = False
        self._sent_claim = None
        self._staged = StagedBatch()

    def _discard_connection_if_broken(self) -> None:
        """Give a broken connection back to the pool, which replaces it."""
        conn = self._conn
        if conn is not None and (conn.broken or conn.closed):
            self._conn = None
            self._pool.putconn(conn)

    def _in_open_transaction(self, conn: Any) -> bool:
        """Return whether the connection has a transaction open (or failed) on the server."""
        status = self._psycopg.pq.TransactionStatus
        return bool(conn.pgconn.transaction_status != status.IDLE)

    def savepoint(self) -> None:
        """Open the savepoint of one handler attempt (releasing the previous one, if kept)."""
        self._settle_claim()
        if self._ahead:  # sent when the previous attempt was kept: read its answer
            self._ahead = False
            self._read_ahead()
            return
        if self._release_pending:  # the previous attempt's release rides on this round trip
            self._release_pending = False
            self._conn.execute("RELEASE SAVEPOINT choreo_handler; SAVEPOINT choreo_handler")
        else:
            self._conn.execute("SAVEPOINT choreo_handler")

    def release_savepoint(self) -> None:
        """Keep the handler attempt's writes, and open the next attempt's savepoint ahead.

        ``RELEASE SAVEPOINT; SAVEPOINT`` is sent now and its answer read only when the
        connection is next used (the next attempt's :meth:`savepoint`, another statement
        through :attr:`connection`, the commit): the round trip overlaps the runtime's
        work between two events instead of adding to it. An open savepoint that no attempt
        uses is harmless (COMMIT keeps what it holds: nothing); one that fails (the kept
        attempt left the transaction aborted) raises where the next statement would.
        """
        conn = self._conn
        status = self._psycopg.pq.TransactionStatus
        if self._generators is None:  # this psycopg lacks the calls: the plain round trip
            self._release_pending = True
            return
        if conn.pgconn.transaction_status not in (status.INTRANS, status.INERROR):
            self._release_pending = True  # no transaction open: send it with the next
            return
        try:
            with conn.lock:
                conn.pgconn.send_query(_NEXT_SAVEPOINT)
                self._ahead = self._ahead_unread = True
                conn.wait(self._generators.send(conn.pgconn))
        except self._psycopg.OperationalError:  # the link is lost: the next statement says so
            self._ahead = self._ahead_unread = False
            self._release_pending = True

    def rollback_to_savepoint(self) -> None:
        """Undo the handler attempt's writes."""
        self._conn.execute("ROLLBACK TO SAVEPOINT choreo_handler; RELEASE SAVEPOINT choreo_handler")

    def _settle_ahead(self) -> None:
        """Before statements of no handler attempt: the savepoint sent ahead is not the next one.

        Writes made now must not fall inside it (a failed attempt would undo them), so the
        next attempt's :meth:`savepoint` releases it and opens a fresh one.
        """
        if self._ahead:
            self._ahead = False
            self._release_pending = True
        self._read_ahead()

    def _read_ahead(self) -> None:
        """Read the server's answer to the savepoint sent ahead; raise the error it reports."""
        if not self._ahead_unread:
            return
        self._ahead_unread = False
        conn, generators = self._conn, self._generators
        assert generators is not None  # nothing is sent ahead without them
        with conn.lock:
            results = conn.wait(generators.fetch_many(conn.pgconn))
        for result in results:
            if result.status == self._psycopg.pq.ExecStatus.FATAL_ERROR:
                raise self._psycopg.errors.error_from_result(result, encoding=conn.info.encoding)

    # --- inbox and outbox --------------------------------------------------------------

    def seen(self, consumer: str, event_ids: Collection[str]) -> set[str]:
        """Claim the ids not handled yet for this transaction; return the handled ones.

        Inside a transaction (:meth:`begin`) the new ids are inserted at once, so a
        replica claiming the same ids waits for this transaction: if it commits they are
        handled, if it rolls back (or the ids are not handled) they are free again.
        Outside one it only reads.
        """
        return self.claim_ahead(consumer, event_ids)()

    def claim_ahead(self, consumer: str, event_ids: Collection[str]) -> Callable[[], set[str]]:
        """Send :meth:`seen`'s claim now; the returned call reads its answer (the handled ids).

        The server inserts the batch's inbox keys while the caller goes on with work that
        does not touch the database (the worker decodes the batch and runs the handlers
        that take no context). Any use of the connection in the meantime (``ctx.db``, a
        savepoint, the commit) reads the answer first, and a rollback discards it, so
        nothing else ever runs inside the claim's pipeline. The guarantee is
        :meth:`seen`'s: the answer, once read, is the same. Outside a transaction it only
        reads, at once.
        """
        ids = list(event_ids)
        if not ids or not self._in_transaction():
            handled = self._handled(consumer, ids)
            return lambda: handled
        if self._sent_claim is not None:  # a second claim in one batch (a refusal's)
            self._settle_claim()
        self._settle_ahead()
        claim = SentClaim(
            self._conn,
            self._psycopg.errors.UniqueViolation,
            consumer,
            ids,
            now_ms(),
            generators=self._generators,
            # the rows acknowledged since the last batch are deleted while the handlers run
            leading=self._staged.take_deletion(self._outbox) if self._generators else (),
            # queued behind the previous batch's COMMIT, whose answer is not read yet
            begin=True if self._behind is not None else None,
        )
        self._sent_claim = claim
        return lambda: self._claim_result(claim)

    def _handled(self, consumer: str, ids: list[str]) -> set[str]:
        """Return which of ``ids`` ``consumer`` handled (a read on a pool connection)."""
        if not ids:
            return set()
        keys = inbox_keys(consumer, ids)
        with self._pool.connection() as conn:
            rows = conn.execute(HANDLED, (keys,)).fetchall()
        return ids_of(keys, rows)

    def _claim_result(self, claim: SentClaim) -> set[str]:
        """Return ``claim``'s answer, read now unless the store read it already."""
        if claim is self._sent_claim:
            self._settle_claim()
        return claim.result()

    def _settle_claim(self) -> None:
        """Read the answer to the claim sent ahead (before any other use of the connection),
        and before it the answer to a COMMIT sent behind."""
        self.settle_behind()
        claim = self._sent_claim
        if claim is None:
            return
        self._sent_claim = None
        handled = claim.result()
        self._staged.claimed.append((claim.consumer, set(claim.ids) - handled))

    def add(self, consumer: str, event_ids: Sequence[str], handled_at_ms: int) -> None:
        """Record ``event_ids`` as handled by ``consumer`` (written at commit)."""
        if event_ids:
            self._staged.added.append((consumer, event_ids, handled_at_ms))

    def enqueue(self, origin: str, records: Sequence[OutboxRecord]) -> None:
        """Stage records to publish (inserted at commit, in order, after earlier ones)."""
        if records:
            self._staged.outbox.append((origin, records))

    def mark_sent(self, ids: Sequence[str]) -> None:
        """Stage the deletion of acknowledged records (at commit)."""
        self._staged.sent.extend(ids)

    def pending(self, origin: str) -> list[OutboxRecord]:
        """Return ``origin``'s unsent records (of every replica) in the order they were stored."""
        with self._pool.connection() as conn:
            return self._outbox.pending(conn, origin)

    def outbox_size(self, origin: str) -> int:
        """Return how many of ``origin``'s records are unsent (of every replica)."""
        with self._pool.connection() as conn:
            row = conn.execute(OUTBOX_SIZE, (origin,)).fetchone()
        return int(row[0]) if row is not None else 0

    def relay(self, origin: str, *, min_age_ms: int, limit: int, publish: Publish) -> int:
        """Claim other replicas' old rows (``SKIP LOCKED``), publish, delete; in key order.

        A batch row whose key has an older row still in the outbox that this claim did
        not get (held by another relay, or not old enough) waits for the next round, so
        records of one correlation id go out in the order they were stored. ``limit`` is
        approximate: whole batch rows are taken.
        """
        total = 0
        while total < limit:
            with self._pool.connection() as conn:
                count = self._outbox.relay(conn, origin, now_ms() - min_age_ms, publish)
            if not count:
                break
            total += count
        return total

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        """Apply ``component``'s new migrations under an advisory lock (replicas wait)."""
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            return apply_migrations(conn, self.dialect, component, migrations, now_ms())

    def prune(self, consumer: str, older_than_ms: int) -> int:
        """Delete ``consumer``'s inbox rows handled before ``older_than_ms`` (in the batch)."""
        if self._in_transaction():
            self._settle_claim()
            self._settle_ahead()
            cursor = self._conn.execute(
                "DELETE FROM choreo_inbox WHERE consumer = %s AND handled_at < %s",
                (consumer, older_than_ms),
            )
            return int(cursor.rowcount)
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "DELETE FROM choreo_inbox WHERE consumer = %s AND handled_at < %s",
                (consumer, older_than_ms),
            )
            return int(cursor.rowcount)

    def close(self) -> None:
        """Return the connection and close the pool."""
        with self._lock:
            with contextlib.suppress(self._psycopg.Error):
                self.settle_behind()
            if self._conn is not None:
                conn, self._conn = self._conn, None
                self._pool.putconn(conn)
            self._pool.close()


def _configure(conn: Any) -> None:
    """Teach a new pool connection to send :class:`InboxKeys` as a binary ``uuid[]``."""
    conn.adapters.register_dumper(InboxKeys, keys_dumper())
