"""The PostgreSQL store's inbox claim sent ahead, on a real server.

:meth:`PostgresStore.claim_ahead` sends a batch's claim and returns a call that reads the
answer later; whatever uses the connection first (``ctx.db``, a savepoint, the commit)
reads it, a rollback discards it, and the answer is :meth:`seen`'s whenever it is read,
including when the server's unique violation comes back while the claim is still being
sent.
"""

from __future__ import annotations

import contextlib
import select
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from choreo.store.pg_claim import SentClaim
from choreo.store.postgres import PostgresStore


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    """Yield a PostgresStore on a fresh schema."""
    opened = PostgresStore(postgres_url, schema=f"t_{uuid.uuid4().hex[:12]}")
    yield opened
    opened.close()


def _handle(store: PostgresStore, ids: list[str]) -> None:
    """Commit a transaction that claims and handles ``ids``."""
    store.begin()
    store.seen("g", ids)
    store.add("g", ids, 1000)
    store.commit()


def _ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def test_the_answer_read_later_names_the_handled_ids(store: PostgresStore) -> None:
    """New ids are claimed and handled ones reported, after other work in between."""
    old, new = _ids(3), _ids(4)
    _handle(store, old)
    store.begin()
    answer = store.claim_ahead("g", [*new, *old])
    time.sleep(0.05)  # the worker's handlers without context run meanwhile
    assert answer() == set(old)
    assert answer() == set(old)  # read once, kept
    store.add("g", new, 1000)
    store.commit()
    assert store.seen("g", [*new, *old, "fresh"]) == {*new, *old}


def test_using_the_connection_reads_the_answer_first(store: PostgresStore) -> None:
    """A statement through ``ctx.db``'s connection waits for the claim; so does a savepoint."""
    old, new = _ids(2), _ids(2)
    _handle(store, old)
    store.begin()
    answer = store.claim_ahead("g", [*old, *new])
    store.savepoint()  # a handler's first ctx.db
    assert store.connection.execute("SELECT 1").fetchone() == (1,)
    store.release_savepoint()
    assert answer() == set(old)
    store.add("g", new, 1000)
    store.commit()
    assert store.seen("g", new) == set(new)


def test_a_rollback_with_the_answer_unread_frees_the_ids(store: PostgresStore) -> None:
    """The claim of a rolled-back batch is undone, and the store's next batch works."""
    ids = _ids(3)
    store.begin()
    store.claim_ahead("g", ids)
    store.rollback()
    assert store.seen("g", ids) == set()
    _handle(store, ids)
    assert store.seen("g", ids) == set(ids)


def test_a_commit_with_the_answer_unread_reads_it(store: PostgresStore) -> None:
    """Nothing reads the answer before the commit: the commit does, and keeps the claim."""
    ids = _ids(3)
    store.begin()
    store.claim_ahead("g", ids)
    store.add("g", ids, 1000)
    store.commit()
    assert store.seen("g", ids) == set(ids)


class _SlowSender:
    """``conn``, but the claim's last statement waits for the server's answer to the INSERT
    (an error is sent at once, without a sync), so psycopg reads its unique violation
    while the claim is sent."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def pipeline(self) -> Any:
        return self._conn.pipeline()

    def execute(self, query: Any, params: Any = None) -> Any:
        if query == "RELEASE SAVEPOINT choreo_claim" and self._conn._pipeline is not None:
            readable, _, _ = select.select([self._conn.fileno()], [], [], 10.0)
            assert readable, "the server did not answer the INSERT"
        return self._conn.execute(query, params)


@contextlib.contextmanager
def _inbox_locked(store: PostgresStore, url: str) -> Iterator[None]:
    """Hold a lock that makes the claim's INSERT wait: its answer comes after the send."""
    with psycopg.connect(url, options=f"-c search_path={store.schema}") as blocker:
        blocker.execute("LOCK TABLE choreo_inbox IN SHARE MODE")
        yield
        blocker.rollback()


@pytest.mark.parametrize("slow", [False, True], ids=["answer-after-send", "answer-during-send"])
def test_handled_ids_are_found_whenever_the_answer_arrives(
    store: PostgresStore, postgres_url: str, slow: bool
) -> None:
    """The plain INSERT's unique violation, read at the end or while sending, gives the
    same answer: the handled ids, the rest claimed."""
    old, new = _ids(2), _ids(2)
    _handle(store, old)
    store.begin()
    conn = store.connection
    violation, ids = psycopg.errors.UniqueViolation, [*new, *old]
    if slow:
        claim = SentClaim(_SlowSender(conn), violation, "g", ids, 1000)
    else:  # a fast server may answer while the claim is sent: hold the INSERT until after
        with _inbox_locked(store, postgres_url):
            claim = SentClaim(conn, violation, "g", ids, 1000)
    assert claim._answered is slow  # the path this case is for was taken
    assert claim.result() == set(old)
    assert conn.execute("SELECT count(*) FROM choreo_inbox").fetchone() == (4,)
    store.rollback()
