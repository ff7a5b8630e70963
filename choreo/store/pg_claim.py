"""The PostgreSQL store's inbox claim of one batch, sent to the server and read back later.

A batch's claim (see :mod:`choreo.store.pg_inbox`) is three statements in one pipeline:
``SAVEPOINT``, the plain ``INSERT`` of the batch's keys, ``RELEASE`` (after ``BEGIN`` and
whatever the store sends with them: the deletion of acknowledged outbox rows, see
:mod:`choreo.store.pg_pipeline`; psycopg's own pipeline serves where psycopg lacks the
calls that needs). :class:`SentClaim`
sends them at once and reads the server's answer only when :meth:`SentClaim.result` is
called, so the server inserts the keys while the client does other work: the worker
decodes the batch and runs the handlers that take no context meanwhile (see
:meth:`choreo.store.PostgresStore.claim_ahead`). Until the answer is read the
connection is in pipeline mode and nothing else may use it; the store reads the answer
before any other use of the connection.

When some keys were handled already, the plain ``INSERT`` fails with a unique violation:
the savepoint is rolled back and ``ON CONFLICT DO NOTHING`` claims the rest, returning
the keys it did not claim (the handled ones). That costs one more round trip, and only
then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from choreo.store.pg_inbox import CLAIM_NEW, CLAIM_REST, InboxKeys, inbox_keys
from choreo.store.pg_pipeline import INT8, TEXT, UUID_ARRAY, SentStatements, Statement, numbered

__all__ = ["SentClaim"]

_CLAIM_NEW_RAW = numbered(CLAIM_NEW)


class SentClaim:
    """One batch's inbox claim, sent on ``conn``; :meth:`result` reads the server's answer.

    ``unique_violation`` is psycopg's ``errors.UniqueViolation`` (psycopg is imported by
    the store, not here). With ``generators`` (psycopg's, see
    :func:`~choreo.store.pg_connect.send_ahead_api`) the claim goes out as one libpq
    pipeline, ``leading`` statements first (their failure raises from :meth:`result`),
    ``begin`` as :class:`~choreo.store.pg_pipeline.SentStatements` takes it; without,
    through psycopg's pipeline. The answer is read once; later calls return the
    same set, or raise the same error.
    """

    def __init__(
        self,
        conn: Any,
        unique_violation: type[Exception],
        consumer: str,
        ids: Sequence[str],
        handled_at_ms: int,
        *,
        generators: Any = None,
        leading: Sequence[Statement] = (),
        begin: bool | None = None,
    ) -> None:
        self.consumer = consumer
        self.ids = ids
        self._conn = conn
        self._unique_violation = unique_violation
        self._keys: InboxKeys = inbox_keys(consumer, ids)
        self._at = handled_at_ms
        self._handled: set[str] | None = None
        self._error: BaseException | None = None
        self._pipeline = contextlib.ExitStack()
        self._answered = False  # the server's unique violation came back while sending
        self._sent: SentStatements | None = None
        try:
            if generators is not None:  # one libpq pipeline, BEGIN in it (pg_pipeline)
                statements = _claim_statements(consumer, handled_at_ms, self._keys)
                self._sent = SentStatements(
                    conn, generators, [*leading, *statements], begin=begin
                )
                return
            self._pipeline.enter_context(conn.pipeline())
            conn.execute("SAVEPOINT choreo_claim")
            conn.execute(CLAIM_NEW, (consumer, handled_at_ms, self._keys))
            conn.execute("RELEASE SAVEPOINT choreo_claim")
        except unique_violation as exc:  # a fast server: psycopg read the answer already
            self._answered = True
            self._leave_pipeline(exc)
        except BaseException as exc:
            self._error = exc
            self._leave_pipeline(exc)
            raise

    @property
    def read(self) -> bool:
        """True once the server's answer was read (or given up)."""
        return self._handled is not None or self._error is not None

    def result(self) -> set[str]:
        """Return the ids of the batch that were handled already (the rest is claimed)."""
        if self._handled is None and self._error is None:
            try:
                self._handled = self._finish()
            except BaseException as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        assert self._handled is not None
        return self._handled

    def discard(self) -> None:
        """Leave pipeline mode without wanting the answer (the transaction rolls back)."""
        if self.read:
            return
        self._error = RuntimeError("the inbox claim was discarded")
        with contextlib.suppress(Exception):
            if self._sent is not None:
                self._sent.read()
            self._pipeline.close()

    def _leave_pipeline(self, error: BaseException) -> None:
        """Leave pipeline mode after ``error`` was raised while the claim was sent."""
        with contextlib.suppress(Exception):
            self._pipeline.__exit__(type(error), error, error.__traceback__)

    def _finish(self) -> set[str]:
        """Read the answer; on a unique violation claim the rest and return the handled."""
        conn = self._conn
        if not self._answered:
            try:
                if self._sent is not None:
                    self._sent.read()
                self._pipeline.close()  # leaves pipeline mode: reads every result, raises
                return set()
            except self._unique_violation:
                pass
        conn.execute("ROLLBACK TO SAVEPOINT choreo_claim")
        conn.execute("RELEASE SAVEPOINT choreo_claim")
        rows = conn.execute(CLAIM_REST, (self._keys, self.consumer, self._at)).fetchall()
        return ids_of(self._keys, rows)


def _claim_statements(consumer: str, handled_at_ms: int, keys: InboxKeys) -> list[Statement]:
    """Return the claim's statements for a libpq pipeline (see :class:`SentStatements`)."""
    params: list[bytes | str | None] = [consumer, b"%d" % handled_at_ms, bytes(keys)]
    return [
        Statement(b"SAVEPOINT choreo_claim"),
        Statement(_CLAIM_NEW_RAW, params, (TEXT, INT8, UUID_ARRAY), (0, 0, 1)),
        Statement(b"RELEASE SAVEPOINT choreo_claim"),
    ]


def ids_of(keys: InboxKeys, rows: list[Any]) -> set[str]:
    """Return the ids of the keys in ``rows`` (the server returns them as ``uuid.UUID``)."""
    if not rows:
        return set()
    id_of = keys.id_of()
    return {id_of[row[0].bytes] for row in rows}
