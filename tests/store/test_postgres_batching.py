"""How the PostgreSQL store batches its own work, on a real server.

A batch's inbox claim is a plain INSERT in a savepoint, replaced by ``ON CONFLICT DO
NOTHING`` when some ids were handled already; ids and keys travel as one string unless
an id holds the separator (or is empty); acknowledgements of whole rows delete them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from choreo.store.outbox import OutboxRecord
from choreo.store.postgres import PostgresStore


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    """Yield a PostgresStore on a fresh schema."""
    opened = PostgresStore(postgres_url, schema=f"t_{uuid.uuid4().hex[:12]}")
    yield opened
    opened.close()


def _record(record_id: str, key: bytes | None = b"k") -> OutboxRecord:
    return OutboxRecord(record_id, "t", key, b"v", [("h", record_id.encode())])


def _claim(store: PostgresStore, ids: list[str], handled: list[str]) -> set[str]:
    """Claim ``ids`` in a transaction that handles ``handled``; return the ids seen."""
    store.begin()
    seen = store.seen("g", ids)
    store.add("g", handled, 1000)
    store.commit()
    return seen


@pytest.mark.parametrize("odd", ["a\x1fb", ""])
def test_ids_a_joined_string_cannot_carry_are_claimed_too(store: PostgresStore, odd: str) -> None:
    """An id holding the separator, or an empty one, takes the list path with the same result."""
    assert _claim(store, ["x", odd, "x"], ["x", odd]) == set()
    assert _claim(store, [odd, "y"], ["y"]) == {odd}
    assert store.seen("g", ["x", odd, "y", "z"]) == {"x", odd, "y"}
    store.begin()
    store.enqueue("o", [_record("r1"), _record(odd, key=None)])
    store.commit()
    assert [r.id for r in store.pending("o")] == ["r1", odd]


def test_a_batch_with_handled_ids_claims_only_the_new_ones(store: PostgresStore) -> None:
    """After the plain INSERT meets a handled id, the rest of the batch is still claimed."""
    assert _claim(store, ["a", "b"], ["a", "b"]) == set()
    assert _claim(store, ["b", "c", "a", "d"], ["c", "d"]) == {"a", "b"}
    assert store.seen("g", ["a", "b", "c", "d", "e"]) == {"a", "b", "c", "d"}


def test_whole_rows_acknowledged_together_are_deleted(store: PostgresStore) -> None:
    """Acknowledging two batch rows' ids in one go empties the outbox (the worker's case)."""
    for batch in (["1", "2"], ["3"]):
        store.begin()
        store.enqueue("o", [_record(i) for i in batch])
        store.commit()
    store.begin()
    store.mark_sent(["1", "2", "3"])
    store.commit()
    assert store.pending("o") == []
    assert store.outbox_size("o") == 0


def test_outbox_batches_are_lz4_compressed(store: PostgresStore, postgres_url: str) -> None:
    """Where the server has lz4 (the one this suite starts does), batch rows use it."""
    with psycopg.connect(postgres_url) as conn:
        has_lz4 = conn.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).fetchone()
        if not (has_lz4 and has_lz4[0]):
            pytest.skip("this PostgreSQL server was built without lz4")
        rows = conn.execute(
            "SELECT attname, attcompression FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname IN ('records', 'ids', 'keys')",
            (f"{store.schema}.choreo_outbox",),
        ).fetchall()
    assert sorted(rows) == [("ids", "l"), ("keys", "l"), ("records", "l")]
