"""The store contract (:mod:`choreo.testing.store_contract`) run against choreo's three stores.

The PostgreSQL runs use the session's real server (``postgres_url``), each test in a
schema of its own. Also here: opening stores by URL, and passwords kept out of errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo.errors import ConfigurationError
from choreo.store import MemoryStore, SqliteStore, Store, open_store
from choreo.store.postgres import PostgresStore
from choreo.testing.store_contract import DurableStoreContract, StoreContract, StoreFactory


class TestMemoryStore(StoreContract):
    """The memory store honours the contract (durability and tables aside)."""

    @pytest.fixture
    def open_same(self) -> StoreFactory:
        """Return the one memory store: "another object on the same data" is itself."""
        shared = MemoryStore()
        return lambda: shared


class TestSqliteStore(DurableStoreContract):
    """The SQLite store honours the whole contract."""

    @pytest.fixture
    def open_same(self, tmp_path: Path) -> Iterator[StoreFactory]:
        """Return a factory of SqliteStore objects on one file."""
        opened: list[Store] = []

        def factory() -> Store:
            store = SqliteStore(tmp_path / "store.db")
            opened.append(store)
            return store

        yield factory
        for store in opened:
            store.close()


class TestPostgresStore(DurableStoreContract):
    """The PostgreSQL store honours the whole contract, on a real server."""

    @pytest.fixture
    def open_same(self, postgres_url: str) -> Iterator[StoreFactory]:
        """Return a factory of PostgresStore objects on one fresh schema."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        opened: list[Store] = []

        def factory() -> Store:
            store = PostgresStore(postgres_url, schema=schema)
            opened.append(store)
            return store

        yield factory
        for store in opened:
            store.close()


class TestPostgresStoreOnPsycopgPipelines(TestPostgresStore):
    """The same where psycopg lacks the calls of choreo's own pipelines: every statement
    of a batch then goes through psycopg's ``Connection.pipeline()``."""

    @pytest.fixture
    def open_same(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[StoreFactory]:
        """Return a factory of PostgresStore objects without the send-ahead calls."""
        monkeypatch.setattr("choreo.store.postgres.send_ahead_api", lambda psycopg: None)
        schema = f"t_{uuid.uuid4().hex[:12]}"
        opened: list[PostgresStore] = []

        def factory() -> Store:
            store = PostgresStore(postgres_url, schema=schema)
            assert store._generators is None
            opened.append(store)
            return store

        yield factory
        for store in opened:
            store.close()


def test_open_store_reads_urls_and_hides_passwords(tmp_path: Path) -> None:
    """open_store understands sqlite URLs and paths; errors and reprs never show a password."""
    store = open_store(f"sqlite:///{tmp_path}/a.db?durability=normal")
    assert isinstance(store, SqliteStore)
    assert store.durability == "normal"
    assert store.connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    default = open_store(str(tmp_path / "b.db"))
    assert isinstance(default, SqliteStore)
    assert default.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    default.close()
    assert isinstance(open_store("memory:"), MemoryStore)
    with pytest.raises(ConfigurationError) as bad:
        open_store("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(bad.value)
    with pytest.raises(ConfigurationError) as refused:
        PostgresStore("postgresql://choreo:hunter2@127.0.0.1:1/nothing", timeout=2)
    assert "hunter2" not in str(refused.value)
    assert "choreo:***@127.0.0.1:1" in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
