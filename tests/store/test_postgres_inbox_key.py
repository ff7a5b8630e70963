"""The PostgreSQL inbox keyed by one uuid (schema version 4), on a real server.

The client computes a batch's keys in one go (choreo.store.pg_inbox); the SQL function
``choreo_inbox_key`` computes the same key on the server, which the migration from the
text key relies on: ids handled before the upgrade stay handled after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.store.base import CHOREO_COMPONENT
from choreo.store.migrations import apply_migrations
from choreo.store.pg_inbox import inbox_keys, key_of
from choreo.store.postgres import POSTGRES_MIGRATIONS, PostgresStore

CANONICAL = "0f8e4a6b-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
ODD_IDS = [
    CANONICAL.upper(),  # the same UUID in upper case: another id
    CANONICAL.replace("-", ""),  # the same UUID without dashes: another id
    "{" + CANONICAL + "}",
    "order-42",
    "",
    "a\x1fb",
    "ünïcode-id",
    "x" * 36,
]


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """Yield a fresh schema name (created), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def _claim(store: PostgresStore, consumer: str, ids: list[str]) -> set[str]:
    """Claim and handle ``ids`` for ``consumer`` in one transaction; return those seen."""
    store.begin()
    seen = store.seen(consumer, ids)
    store.add(consumer, ids, 1000)
    store.commit()
    return seen


def test_the_server_computes_the_clients_keys(postgres_url: str, schema: str) -> None:
    """choreo_inbox_key (SQL) and key_of / inbox_keys (Python) agree on every kind of id."""
    store = PostgresStore(postgres_url, schema=schema)
    store.close()
    ids = [str(uuid.uuid4()) for _ in range(20)] + [CANONICAL, *ODD_IDS]
    with psycopg.connect(postgres_url, options=f"-c search_path={schema}") as conn:
        for consumer in ("g", "group-ü"):
            rows = conn.execute(
                "SELECT choreo_inbox_key(%s, i) FROM unnest(%s::text[]) AS i", (consumer, ids)
            ).fetchall()
            assert [row[0].bytes for row in rows] == [key_of(consumer, i) for i in ids]
            batch = bytes(inbox_keys(consumer, ids[:20]))[20:]  # canonical: the fast path
            assert batch == b"".join(b"\x00\x00\x00\x10" + key_of(consumer, i) for i in ids[:20])


def test_ids_of_one_uuid_in_other_forms_are_other_ids(postgres_url: str, schema: str) -> None:
    """Upper case, no dashes, braces: each is its own id, never a copy of the canonical one."""
    store = PostgresStore(postgres_url, schema=schema)
    try:
        assert _claim(store, "g", [CANONICAL]) == set()
        assert _claim(store, "g", [CANONICAL, *ODD_IDS]) == {CANONICAL}
        assert store.seen("g", [CANONICAL, *ODD_IDS, "new"]) == {CANONICAL, *ODD_IDS}
    finally:
        store.close()


def test_consumers_keep_apart(postgres_url: str, schema: str) -> None:
    """One id handled by one consumer is new to another (their keys differ)."""
    store = PostgresStore(postgres_url, schema=schema)
    ids = [str(uuid.uuid4()) for _ in range(3)] + ["order-1"]
    try:
        assert _claim(store, "a", ids) == set()
        assert _claim(store, "b", ids) == set()
        assert _claim(store, "a", ids) == set(ids)
        assert store.prune("b", 2**62) == len(ids)  # prune reaches one consumer's rows
        assert store.seen("b", ids) == set()
        assert store.seen("a", ids) == set(ids)
    finally:
        store.close()


def test_ids_handled_before_the_upgrade_stay_handled(postgres_url: str, schema: str) -> None:
    """Migration 4 converts the text-keyed inbox: its ids are still seen, new ones are not."""
    handled = [str(uuid.uuid4()) for _ in range(5)] + ODD_IDS
    options = f"-c search_path={schema}"
    with psycopg.connect(postgres_url, options=options) as conn:
        apply_migrations(conn, "postgresql", CHOREO_COMPONENT, POSTGRES_MIGRATIONS[:3], 1)
        conn.execute(  # the inbox as versions 1-3 wrote it
            "INSERT INTO choreo_inbox (consumer, event_id, handled_at)"
            " SELECT c, i, 500 FROM unnest(%s::text[]) AS i, unnest(%s::text[]) AS c",
            (handled, ["g", "other"]),
        )
    store = PostgresStore(postgres_url, schema=schema)
    try:
        fresh = str(uuid.uuid4())
        assert store.seen("g", [*handled, fresh]) == set(handled)
        assert _claim(store, "g", [handled[0], fresh, "order-new"]) == {handled[0]}
        assert store.seen("other", [*handled, fresh]) == set(handled)
        assert store.prune("g", 600) == len(handled)  # handled_at kept
        with psycopg.connect(postgres_url, options=options) as conn:
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = 'choreo_inbox' ORDER BY column_name",
                (schema,),
            ).fetchall()
        assert columns == [("consumer",), ("event_key",), ("handled_at",)]
    finally:
        store.close()


_HEX = "0123456789abcdef"
_UUIDISH = st.builds(
    lambda chars: "-".join(
        "".join(chars[a:b]) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
    ),
    st.lists(st.sampled_from(_HEX + "ABF-\x1f g"), min_size=32, max_size=32),
)


@given(st.lists(st.one_of(_UUIDISH, st.uuids().map(str), st.text(max_size=40)), max_size=8))
def test_a_batchs_keys_are_each_ids_own_whatever_the_others(ids: list[str]) -> None:
    """Every key of a batch's array is that id's own key, whatever else the batch holds:
    a crafted id (a separator or a dash in place of a hex digit) cannot shift the keys of
    the other events, which would let their redelivery through the inbox."""
    keys = inbox_keys("consumer", ids)
    body = bytes(keys)[20:]
    assert [body[20 * i + 4 : 20 * i + 20] for i in range(len(ids))] == [
        key_of("consumer", id_) for id_ in ids
    ]


def test_two_separators_in_an_id_leave_the_other_keys_alone() -> None:
    """The case found on reading the fast path: two unit separators in place of hex digits."""
    good = "0d1c2b3a-4f5e-6d7c-8b9a-0a1b2c3d4e5f"
    crafted = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaa\x1f\x1f"
    body = bytes(inbox_keys("c", [good, crafted]))[20:]
    assert body[4:20] == key_of("c", good)
    assert body[24:40] == key_of("c", crafted)
