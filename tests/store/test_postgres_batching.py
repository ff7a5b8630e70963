"""How the PostgreSQL store batches its own work, on a real server.

A batch's inbox claim is a plain INSERT in a savepoint, replaced by ``ON CONFLICT DO
NOTHING`` when some ids were handled already; ids travel as one string unless an id
holds the separator (or is empty); acknowledgements of whole rows delete them; the relay
reads a row's keys from its blob, rows of schema version 2 included.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence

import psycopg
import pytest

from choreo.store.base import CHOREO_COMPONENT
from choreo.store.migrations import apply_migrations
from choreo.store.outbox import OutboxRecord, pack_records
from choreo.store.postgres import POSTGRES_MIGRATIONS, PostgresStore


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


def _publisher(out: list[OutboxRecord]) -> Callable[[Sequence[OutboxRecord]], None]:
    return out.extend


def test_the_relay_orders_by_the_keys_in_the_blob(store: PostgresStore, postgres_url: str) -> None:
    """A row whose key has an older row held by another relay waits; other keys go out."""
    for batch in ([("1", b"a")], [("2", b"a"), ("3", b"b")], [("4", b"c")]):
        store.begin()
        store.enqueue("o", [_record(i, key) for i, key in batch])
        store.commit()
    other = PostgresStore(postgres_url, schema=store.schema)  # another replica's relay
    try:
        with psycopg.connect(postgres_url, options=f"-c search_path={store.schema}") as holder:
            holder.execute("SELECT 1 FROM choreo_outbox ORDER BY seq LIMIT 1 FOR UPDATE")
            published: list[OutboxRecord] = []
            other.relay("o", min_age_ms=0, limit=100, publish=_publisher(published))
            # row 2 shares key a with the held row 1 (and blocks key b with it); row 3 is free
            assert [r.id for r in published] == ["4"]
            keys = holder.execute("SELECT keys FROM choreo_outbox ORDER BY seq").fetchall()
            assert keys == [([],), ([],)]  # the keys column is no longer written
        published.clear()
        other.relay("o", min_age_ms=0, limit=100, publish=_publisher(published))
        assert [r.id for r in published] == ["1", "2", "3"]
    finally:
        other.close()


def _schema_at(postgres_url: str, version: int) -> tuple[str, str]:
    """Create a fresh schema holding choreo's tables as of schema ``version``; return its
    name and the connection option that puts it first on the search path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    options = f"-c search_path={schema}"
    with psycopg.connect(postgres_url, options=options) as conn:
        apply_migrations(conn, "postgresql", CHOREO_COMPONENT, POSTGRES_MIGRATIONS[:version], 1)
    return schema, options


def test_rows_of_schema_version_2_are_relayed_after_the_upgrade(postgres_url: str) -> None:
    """An outbox row written with its keys column (versions 1-2) is relayed after migration 3."""
    schema, options = _schema_at(postgres_url, 2)
    with psycopg.connect(postgres_url, options=options) as conn:
        old = [_record("old-1", b"k"), _record("old-2", None)]
        conn.execute(  # the INSERT of version 2, keys column filled
            "INSERT INTO choreo_outbox (origin, owner, created_ms, ids, keys, records)"
            " VALUES ('o', 'gone', 1, %s, %s, %s)",
            (["old-1", "old-2"], [b"k", b""], pack_records(old)),
        )
    upgraded = PostgresStore(postgres_url, schema=schema)
    try:
        with psycopg.connect(postgres_url, options=options) as conn:
            versions = conn.execute(
                "SELECT version FROM choreo_schema_version WHERE component = 'choreo'"
                " ORDER BY version"
            ).fetchall()
        assert versions == [(v.version,) for v in POSTGRES_MIGRATIONS]
        upgraded.begin()
        upgraded.enqueue("o", [_record("new-1", b"k")])
        upgraded.commit()
        assert [r.id for r in upgraded.pending("o")] == ["old-1", "old-2", "new-1"]
        published: list[OutboxRecord] = []
        upgraded.relay("o", min_age_ms=0, limit=100, publish=_publisher(published))
        assert published == old  # the other writer's row; this store's own row stays
        assert [r.id for r in upgraded.pending("o")] == ["new-1"]
    finally:
        upgraded.close()


def test_ids_another_store_wrote_are_acknowledged_from_the_blob(postgres_url: str) -> None:
    """Since version 5 a row keeps its ids in its blob only: acks of another writer's ids
    (in part, then the rest) are matched there, counted by outbox_size, and delete the row;
    a row of version 4 (ids in its array) is still matched on the array."""
    schema, options = _schema_at(postgres_url, 4)
    with psycopg.connect(postgres_url, options=options) as conn:
        conn.execute(  # the INSERT of version 4: ids in their array
            "INSERT INTO choreo_outbox (origin, owner, created_ms, ids, records)"
            " VALUES ('o', 'gone', 1, %s, %s)",
            (["v4-1", "v4-2"], pack_records([_record("v4-1"), _record("v4-2")])),
        )
    writer = PostgresStore(postgres_url, schema=schema)
    other = PostgresStore(postgres_url, schema=schema)
    try:
        writer.begin()
        writer.enqueue("o", [_record("a"), _record("b"), _record("c")])
        writer.commit()
        with psycopg.connect(postgres_url, options=options) as conn:
            rows = conn.execute("SELECT ids, size FROM choreo_outbox ORDER BY seq").fetchall()
        assert rows == [(["v4-1", "v4-2"], None), ([], 3)]
        assert other.outbox_size("o") == 5
        other.begin()
        other.mark_sent(["b", "v4-1", "unknown"])
        other.commit()
        assert other.outbox_size("o") == 3
        assert [r.id for r in other.pending("o")] == ["v4-2", "a", "c"]
        other.begin()
        other.mark_sent(["c", "a", "b", "v4-2"])
        other.commit()
        assert other.outbox_size("o") == 0
        assert other.pending("o") == []
        with psycopg.connect(postgres_url, options=options) as conn:
            assert conn.execute("SELECT count(*) FROM choreo_outbox").fetchone() == (0,)
    finally:
        writer.close()
        other.close()
