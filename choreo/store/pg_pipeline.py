"""Statements sent to PostgreSQL in one libpq pipeline, every answer read after one sync.

A batch's own statements (the inbox claim; the outbox row, the deletion of acknowledged
rows and the ``COMMIT``) go to the server this way instead of through psycopg's
``Connection.pipeline()``, which costs a batch two extra round trips: psycopg opens a
transaction with ``BEGIN`` and waits for its answer before it sends the next statement,
and a ``commit()`` inside a pipeline block syncs once more when the block ends. Here a
:class:`Statement` list goes out at once behind one sync (``BEGIN`` too, when the
transaction is not open), and :meth:`SentStatements.read` reads every answer up to it.

It drives libpq through psycopg's ``pgconn`` and its ``generators`` (the calls the store's
savepoint sent ahead uses already, see :func:`choreo.store.pg_connect.send_ahead_api`).
The connection is in pipeline mode from :class:`SentStatements` until its
:meth:`~SentStatements.read` returns, and nothing else may use it meanwhile: the store reads the
answers before any other use. A connection left in an unknown protocol state (a send or
a read that failed half-way) is closed, so the store replaces it (its transaction is
rolled back by the server).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator, Sequence
from typing import Any, Final, NamedTuple

__all__ = [
    "BEGIN",
    "BYTEA",
    "COMMIT",
    "INT4",
    "INT8",
    "INT8_ARRAY",
    "TEXT",
    "UUID_ARRAY",
    "SentStatements",
    "Statement",
    "numbered",
]

TEXT: Final = 25
INT8: Final = 20
INT4: Final = 23
BYTEA: Final = 17
INT8_ARRAY: Final = 1016
UUID_ARRAY: Final = 2951

_PLACEHOLDER: Final = re.compile(r"%[sb]")


def numbered(sql: str) -> bytes:
    """Return a psycopg query (``%s``/``%b`` placeholders) with libpq's ``$1``, ``$2``, …"""
    count = iter(range(1, 1 + sql.count("%")))
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql).encode()


class Statement(NamedTuple):
    """One statement and its parameters, as libpq sends them (unnamed: parsed each time).

    ``params`` are the values already encoded (text, or binary where ``formats`` says 1),
    or ``str`` for text that :class:`SentStatements` encodes in the connection's client
    encoding (as psycopg does: the server reads text in that encoding, not always UTF-8);
    ``types`` are their type OIDs. (Statements are not prepared by name: psycopg deallocates
    every prepared statement of a connection after any ``ROLLBACK``, a handler's
    ``ROLLBACK TO SAVEPOINT`` included, so a name prepared here would vanish under it.)
    """

    sql: bytes
    params: Sequence[bytes | str | None] = ()
    types: Sequence[int] = ()
    formats: Sequence[int] = ()


BEGIN: Final = Statement(b"BEGIN")
COMMIT: Final = Statement(b"COMMIT")


class SentStatements:
    """Statements sent in one pipeline (with ``BEGIN`` first if no transaction was open);
    :meth:`read` reads their answers."""

    def __init__(
        self,
        conn: Any,
        generators: Any,
        statements: Sequence[Statement],
        *,
        begin: bool | None = None,
    ) -> None:
        from psycopg.pq import TransactionStatus

        self._conn = conn
        self._generators = generators
        pgconn = conn.pgconn
        # ``begin`` None: BEGIN when no transaction is open; True when the statements are
        # queued behind a COMMIT whose answer is not read yet (libpq cannot tell)
        idle = pgconn.transaction_status == TransactionStatus.IDLE
        self._begun = idle if begin is None else begin
        sent = [BEGIN, *statements] if self._begun else list(statements)
        self._count = len(sent)
        encoding = conn.info.encoding  # before pipeline mode: a value it cannot encode raises
        params = [_encoded(statement.params, encoding) for statement in sent]
        with conn.lock:
            try:
                pgconn.enter_pipeline_mode()
                for statement, values in zip(sent, params, strict=True):
                    pgconn.send_query_params(
                        statement.sql,
                        values,
                        param_types=statement.types or None,
                        param_formats=statement.formats or None,
                    )
                pgconn.pipeline_sync()
                conn.wait(generators.send(pgconn))
            except BaseException:
                _abandon(conn)
                raise

    def read(self, *, leave_pipeline: bool = True) -> list[Any]:
        """Read every answer up to the sync and leave pipeline mode (unless told not to:
        more statements are queued behind these).

        Returns each statement's last result (``BEGIN``'s left out), or raises the
        psycopg error of the first statement that failed; the server skipped the ones
        after it.
        """
        from psycopg import errors
        from psycopg.pq import ExecStatus

        conn = self._conn
        pgconn = conn.pgconn
        with conn.lock:
            try:
                fetched: list[Any] = conn.wait(self._fetch_all(pgconn))
                *answers, sync = fetched
                if sync is None or sync.status != ExecStatus.PIPELINE_SYNC:
                    raise errors.InternalError("a pipeline's answers did not end with its sync")
                if leave_pipeline:
                    pgconn.exit_pipeline_mode()
            except BaseException:
                _abandon(conn)
                raise
        for result in answers:  # BEGIN's too
            if result is not None and result.status == ExecStatus.FATAL_ERROR:
                raise errors.error_from_result(result, encoding=conn.info.encoding)
        if self._begun:
            answers = answers[1:]
        return answers

    def _fetch_all(self, pgconn: Any) -> Generator[Any, Any, list[Any]]:
        """Read one answer per statement and then the sync's, in one wait of the caller.

        Each answer is its statement's last result (None if it had none).
        """
        answers: list[Any] = []
        for _ in range(self._count + 1):
            results = yield from self._generators.fetch_many(pgconn)
            answers.append(results[-1] if results else None)
        return answers


def _encoded(params: Sequence[bytes | str | None], encoding: str) -> list[bytes | None] | None:
    """Return ``params`` with the ``str`` ones encoded in ``encoding`` (None: no parameters)."""
    if not params:
        return None
    return [value.encode(encoding) if isinstance(value, str) else value for value in params]


def _abandon(conn: Any) -> None:
    """Close a connection whose pipeline was left half-sent or half-read.

    Its protocol state is unknown, so it must not be used again: closed, it is
    ``broken`` to psycopg and the store gives it back to the pool, which replaces it;
    the server rolls its transaction back.
    """
    with contextlib.suppress(Exception):  # already gone
        conn.pgconn.finish()
