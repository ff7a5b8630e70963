"""choreo's own libpq pipelines (:mod:`choreo.store.pg_pipeline`), on a real server.

A batch's statements go out at once behind one sync, ``BEGIN`` first when no
transaction is open; the answers come back in order, the first failure raises its
psycopg error, and a connection lost between the send and the read is closed so the
pool replaces it. The store sends the deletion of acknowledged outbox rows with the
batch's inbox claim, inside the batch's transaction.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import generators
from psycopg.pq import TransactionStatus

from choreo.store import Migration
from choreo.store.outbox import OutboxRecord
from choreo.store.pg_pending import PendingCommit
from choreo.store.pg_pipeline import INT4, SentStatements, Statement
from choreo.store.postgres import PostgresStore


@pytest.fixture
def conn(postgres_url: str) -> Iterator[psycopg.Connection]:
    """Yield a plain psycopg connection (transactions not in autocommit)."""
    with psycopg.connect(postgres_url) as opened:
        yield opened


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    """Yield a PostgresStore on a fresh schema."""
    opened = PostgresStore(postgres_url, schema=f"t_{uuid.uuid4().hex[:12]}")
    yield opened
    opened.close()


def test_statements_open_a_transaction_and_answer_in_order(conn: psycopg.Connection) -> None:
    """BEGIN goes first when no transaction is open; its answer is not among the results."""
    assert conn.pgconn.transaction_status == TransactionStatus.IDLE
    sent = SentStatements(
        conn,
        generators,
        [
            Statement(b"SELECT 1"),
            Statement(b"SELECT $1::int + 1", [b"41"], [INT4]),
            Statement(b"SELECT $1::bytea", [b"\x00\xff"], [17], [1]),
        ],
    )
    answers = sent.read()
    assert [answer.get_value(0, 0) for answer in answers] == [b"1", b"42", b"\\x00ff"]
    assert conn.pgconn.transaction_status == TransactionStatus.INTRANS
    conn.rollback()
    # inside an open transaction no BEGIN is sent: one answer per statement
    conn.execute("SELECT 1")
    answers = SentStatements(conn, generators, [Statement(b"SELECT 7")]).read()
    assert [answer.get_value(0, 0) for answer in answers] == [b"7"]
    conn.rollback()


def test_the_first_failure_raises_its_error_and_the_rest_is_skipped(
    conn: psycopg.Connection,
) -> None:
    """The server skips what follows a failed statement; psycopg's error class is raised."""
    conn.execute("CREATE TEMP TABLE t (k int PRIMARY KEY)")
    inserts = [Statement(b"INSERT INTO t VALUES ($1)", [k], [INT4]) for k in (b"1", b"1", b"2")]
    sent = SentStatements(conn, generators, inserts)
    with pytest.raises(psycopg.errors.UniqueViolation):
        sent.read()
    assert conn.pgconn.transaction_status == TransactionStatus.INERROR
    conn.rollback()
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable again


def test_a_connection_lost_before_the_answers_is_closed_for_the_pool(
    conn: psycopg.Connection, postgres_url: str
) -> None:
    """The backend ended while the statements run: the read raises and the connection is
    broken (the store gives it back to the pool, which replaces it)."""
    pid = conn.info.backend_pid
    sent = SentStatements(conn, generators, [Statement(b"SELECT pg_sleep(5)")])
    killer = threading.Timer(
        0.3,
        lambda: psycopg.connect(postgres_url, autocommit=True)
        .execute("SELECT pg_terminate_backend(%s)", (pid,))
        .close(),
    )
    killer.start()
    try:
        with pytest.raises(psycopg.OperationalError):
            sent.read()
    finally:
        killer.join()
    assert conn.broken


def _record(record_id: str) -> OutboxRecord:
    return OutboxRecord(record_id, "t", b"k", b"v", [("h", record_id.encode())])


def _outbox_rows(store: PostgresStore) -> int:
    """Return how many outbox rows the store's own transaction sees."""
    row = store.connection.execute("SELECT count(*) FROM choreo_outbox").fetchone()
    assert row is not None
    return int(row[0])


def test_acknowledged_rows_are_deleted_with_the_claim_and_kept_when_it_rolls_back(
    store: PostgresStore,
) -> None:
    """The deletion rides on the next batch's claim, in that batch's transaction: a
    rollback keeps the rows, and after a commit the store writes and acknowledges on."""
    store.begin()
    store.enqueue("o", [_record("r1"), _record("r2")])
    store.commit()
    store.begin()
    store.mark_sent(["r1", "r2"])
    assert store.claim_ahead("g", ["x"])() == set()
    assert _outbox_rows(store) == 0  # deleted already, before the commit
    store.rollback()
    assert [r.id for r in store.pending("o")] == ["r1", "r2"]
    store.begin()
    store.mark_sent(["r1", "r2"])
    assert store.claim_ahead("g", ["x"])() == set()
    store.add("g", ["x"], 1000)
    store.enqueue("o", [_record("r3")])
    store.commit()
    assert [r.id for r in store.pending("o")] == ["r3"]
    store.begin()  # the store forgot the deleted row: r3's acknowledgement is a whole row
    store.mark_sent(["r3"])
    store.commit()
    assert store.pending("o") == []
    assert store.outbox_size("o") == 0


@pytest.fixture
def latin1_url(postgres_url: str) -> Iterator[str]:
    """Yield the conninfo of a fresh LATIN1 database (its client encoding LATIN1 too)."""
    name = f"latin1_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0"
            " LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    try:
        yield psycopg.conninfo.make_conninfo(postgres_url, dbname=name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_text_parameters_go_out_in_the_connection_encoding(latin1_url: str) -> None:
    """A consumer and an origin beyond ASCII (a service named ``café``) on a database
    whose client encoding is not UTF-8 are stored as psycopg would store them, so the
    statements psycopg sends (the relay's claim, pending, prune) find those rows."""
    store = PostgresStore(latin1_url)
    try:
        store.begin()
        assert store.claim_ahead("café", ["x"])() == set()
        store.add("café", ["x"], 1000)
        store.add("café", ["y"], 1000)  # added without a claim: written with the commit
        store.enqueue("worker.café", [_record("r1")])
        store.commit()
        assert store.outbox_size("worker.café") == 1
        assert [r.id for r in store.pending("worker.café")] == ["r1"]
        with psycopg.connect(latin1_url) as check:
            assert check.info.encoding == "iso8859-1"
            rows = check.execute("SELECT origin, owner FROM choreo_outbox").fetchall()
            assert rows == [("worker.café", store.owner)]
            consumers = check.execute("SELECT DISTINCT consumer FROM choreo_inbox").fetchall()
            assert consumers == [("café",)]
        assert store.prune("café", 2**62) == 2  # x claimed now, y added at 1000
    finally:
        store.close()


def test_a_transaction_a_failed_statement_left_aborted_is_not_committed(
    store: PostgresStore,
) -> None:
    """A statement that failed outside any savepoint, its error caught: the commit raises
    instead of passing a COMMIT the server would answer with a silent rollback."""
    store.begin()
    assert store.claim_ahead("g", ["x"])() == set()
    store.add("g", ["x"], 1000)
    with pytest.raises(psycopg.errors.DivisionByZero):
        store.connection.execute("SELECT 1 / 0")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        store.commit()
    assert store.seen("g", ["x"]) == set()  # the claim was rolled back with the batch
    store.begin()  # the store is usable again
    assert store.claim_ahead("g", ["x"])() == set()
    store.add("g", ["x"], 1000)
    store.commit()
    assert store.seen("g", ["x"]) == {"x"}


def _unread(pending: PendingCommit) -> bool:
    """Return whether the COMMIT's answer is still unread (a call: mypy must not narrow)."""
    return not pending.read


def test_a_commit_sent_behind_is_read_before_the_claim_queued_behind_it(
    store: PostgresStore,
) -> None:
    """The next batch's claim goes out behind the unread COMMIT, in a transaction of its
    own; reading the claim reads the COMMIT first, whose batch is then committed."""
    store.begin()
    assert store.claim_ahead("g", ["x"])() == set()
    store.add("g", ["x"], 1000)
    store.enqueue("o", [_record("r1")])
    pending = store.commit_behind()
    assert _unread(pending)
    with pytest.raises(RuntimeError, match="not read yet"):
        pending.result()
    store.begin()
    answer = store.claim_ahead("g", ["x", "y"])  # sent behind the COMMIT, unread
    assert _unread(pending)
    assert answer() == {"x"}  # x was committed by the batch before
    assert pending.read
    pending.result()
    store.add("g", ["y"], 1000)
    store.commit()
    assert [r.id for r in store.pending("o")] == ["r1"]
    assert store.seen("g", ["x", "y"]) == {"x", "y"}


def test_any_use_of_the_connection_reads_a_commit_sent_behind_first(
    store: PostgresStore,
) -> None:
    """ctx.db (or a rollback, or the next commit) never runs with a COMMIT's answer
    unread: it is read first, and its batch is visible to the statement."""
    store.begin()
    store.enqueue("o", [_record("r1")])
    pending = store.commit_behind()
    store.begin()
    rows = store.connection.execute("SELECT count(*) FROM choreo_outbox").fetchone()
    assert pending.read and rows == (1,)
    store.rollback()
    store.begin()
    store.enqueue("o", [_record("r2")])
    second = store.commit_behind()
    store.begin()
    store.rollback()  # reads the COMMIT first: r2 stays committed
    assert second.read
    second.result()
    assert [r.id for r in store.pending("o")] == ["r1", "r2"]


def test_a_commit_sent_behind_that_fails_raises_from_its_result(
    store: PostgresStore, postgres_url: str
) -> None:
    """A COMMIT that fails behind: its result raises, the claim queued behind it runs in
    a transaction of its own that the rollback undoes, the store writes under a new owner
    id, and nothing of either batch is committed."""
    store.migrate(
        "service:test",
        [
            Migration(
                1,
                "a deferred check",
                [
                    "CREATE TABLE once (k INT, CONSTRAINT one UNIQUE (k)"
                    " DEFERRABLE INITIALLY DEFERRED)"
                ],
            )
        ],
    )
    owner = store.owner
    store.begin()
    assert store.claim_ahead("g", ["x"])() == set()
    store.add("g", ["x"], 1000)
    store.connection.execute("INSERT INTO once VALUES (1), (1)")  # fails at COMMIT
    store.enqueue("o", [_record("r1")])
    pending = store.commit_behind()
    store.begin()
    answer = store.claim_ahead("g", ["y"])
    assert answer() == set()
    with pytest.raises(psycopg.errors.UniqueViolation):
        pending.result()
    store.rollback()
    assert store.owner != owner
    assert store.seen("g", ["x", "y"]) == set()
    assert store.pending("o") == []
