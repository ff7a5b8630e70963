"""The PostgreSQL test server: it serves real SQL, and its directory goes when it stops."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import load_postgres_server_module


def test_session_server_accepts_sql(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database(), 40 + 2").fetchone()
    assert row is not None
    assert row[1] == 42
    assert row[0]


@pytest.mark.slow
def test_script_server_starts_serves_and_cleans_up() -> None:
    module = load_postgres_server_module()
    with module.PostgresServer(port=0) as server:
        workdir = server.workdir
        assert server.is_running()
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (7)")
            row = conn.execute("SELECT sum(x), current_database() FROM t").fetchone()
        assert row == (7, "choreo")
        assert workdir is not None and (workdir / "data" / "PG_VERSION").is_file()
    assert not server.is_running()
    assert not workdir.exists()
