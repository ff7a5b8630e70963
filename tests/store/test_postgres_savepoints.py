"""The PostgreSQL store's handler savepoints, on a real server.

When a handler attempt is kept, the store sends the ``RELEASE`` of its savepoint and the
``SAVEPOINT`` of the next attempt at once and reads the answer only when the connection
is next used: the next attempt then starts without a round trip of its own. The libpq
trace shows which call sends what. The guarantees stay: a failed attempt is undone
alone, statements of no attempt (the claim, a write through ``store.connection``) are
never inside the savepoint a later attempt rolls back, and an attempt that left the
transaction aborted fails the next statement or the commit, never a silent rollback.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from choreo.store import Migration, execute
from choreo.store.outbox import OutboxRecord
from choreo.store.postgres import PostgresStore

_TABLE = [Migration(1, "stock", "CREATE TABLE stock (sku TEXT PRIMARY KEY)")]


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    """Yield a PostgresStore on a fresh schema with a ``stock`` table."""
    opened = PostgresStore(postgres_url, schema=f"t_{uuid.uuid4().hex[:12]}")
    opened.migrate("service:test", _TABLE)
    yield opened
    opened.close()


def _sent(conn: psycopg.Connection, call: Callable[[], object]) -> list[str]:
    """Return the protocol messages the client sends to the server during ``call()``."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            call()
        finally:
            conn.pgconn.untrace()  # flushes the trace
        trace.seek(0)
        return [line.split("\t")[2] for line in trace.read().splitlines() if line[:2] == "F\t"]


def _write(store: PostgresStore, sku: str) -> None:
    """Run one handler attempt's write, as a handler does through ``ctx.db``."""
    execute(store.connection, "INSERT INTO stock VALUES (?)", (sku,))


def _skus(store: PostgresStore) -> list[str]:
    """Return the committed skus, sorted."""
    store.begin()
    rows = execute(store.connection, "SELECT sku FROM stock ORDER BY sku").fetchall()
    store.commit()
    return [row[0] for row in rows]


def test_the_next_attempts_savepoint_is_sent_when_an_attempt_is_kept(
    store: PostgresStore,
) -> None:
    """Keeping an attempt sends one query; the next attempt's savepoint sends nothing."""
    store.begin()
    store.seen("g", ["e1", "e2"])
    conn = store.connection
    store.savepoint()
    _write(store, "a")
    assert _sent(conn, store.release_savepoint) == ["Query"]  # RELEASE …; SAVEPOINT …
    assert _sent(conn, store.savepoint) == []  # only reads the answer
    _write(store, "b")
    store.release_savepoint()
    store.add("g", ["e1", "e2"], 1)
    store.commit()
    assert _skus(store) == ["a", "b"]


def test_a_failed_attempt_between_kept_ones_is_undone_alone(store: PostgresStore) -> None:
    """Kept, failed, kept: the failed attempt's write is gone, the others are committed."""
    store.begin()
    for sku, keep in (("a", True), ("b", False), ("c", True), ("d", False)):
        store.savepoint()
        _write(store, sku)
        if keep:
            store.release_savepoint()
        else:
            store.rollback_to_savepoint()
    store.commit()
    assert _skus(store) == ["a", "c"]


def test_writes_of_no_attempt_are_outside_the_savepoint_sent_ahead(store: PostgresStore) -> None:
    """A write through store.connection and a claim after a kept attempt outlive a failed one."""
    store.begin()
    store.savepoint()
    _write(store, "kept")
    store.release_savepoint()
    _write(store, "outside")  # store.connection, no savepoint(): not an attempt's write
    store.savepoint()
    _write(store, "failed")
    store.release_savepoint()
    assert store.seen("g", ["e1"]) == set()  # the claim, after an attempt was kept
    store.savepoint()
    _write(store, "failed too")
    store.rollback_to_savepoint()
    store.add("g", ["e1"], 1)
    store.commit()
    assert _skus(store) == ["failed", "kept", "outside"]
    assert store.seen("g", ["e1"]) == {"e1"}


def test_an_attempt_that_aborted_the_transaction_fails_the_next_attempt(
    store: PostgresStore,
) -> None:
    """A kept attempt that swallowed a database error: the next savepoint raises, as before."""
    store.begin()
    store.savepoint()
    with pytest.raises(psycopg.errors.DivisionByZero):
        execute(store.connection, "SELECT 1 / 0")
    store.release_savepoint()  # the handler caught the error and returned
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        store.savepoint()
    store.rollback()
    assert _skus(store) == []


def test_an_aborted_transaction_is_never_committed_silently(store: PostgresStore) -> None:
    """With nothing staged, COMMIT of an aborted transaction would only roll back: it raises."""
    store.begin()
    store.savepoint()
    _write(store, "a")
    store.release_savepoint()
    store.savepoint()
    with pytest.raises(psycopg.errors.UniqueViolation):
        _write(store, "a")
    store.release_savepoint()  # the handler caught the error and returned
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        store.commit()
    assert _skus(store) == []
    store.begin()  # the store is usable again
    store.enqueue("o", [OutboxRecord("r1", "t", b"k", b"v", [])])
    store.commit()
    assert [r.id for r in store.pending("o")] == ["r1"]


def test_a_psycopg_without_the_send_ahead_calls_opens_each_savepoint_plainly(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where psycopg lacks the (undocumented) calls the savepoint sent ahead uses, the store
    opens every savepoint with a round trip of its own, and attempts keep their meaning."""
    monkeypatch.setattr("choreo.store.postgres.send_ahead_api", lambda psycopg: None)
    plain = PostgresStore(postgres_url, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        plain.migrate("service:test", _TABLE)
        test_a_failed_attempt_between_kept_ones_is_undone_alone(plain)
        assert plain._generators is None
    finally:
        plain.close()
