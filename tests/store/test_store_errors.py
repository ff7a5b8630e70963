"""What a user who gets the store URL wrong sees: the cause and the fix, never the password.

The PostgreSQL cases run on real servers: the session's, and for a refused login one of
``scripts/postgres_server.py``'s started here with a password-checked role (the session
server trusts every login, so no password is ever refused there).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from choreo.errors import ConfigurationError
from choreo.safety.redact import install_log_redaction
from choreo.store import Migration, PostgresStore, SqliteStore, open_store
from choreo.store.sql import execute
from tests.conftest import _no_broker, load_postgres_server_module

PASSWORD = "Pw-" + uuid.uuid4().hex[:10]
WRONG = "Wrong-" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def secured_server() -> Iterator[str]:
    """Yield ``host:port`` of a fresh server on which role ``app`` logs in by password only."""
    module = load_postgres_server_module()
    server = module.PostgresServer(port=0, install=False)
    try:
        server.start()
    except (module.PostgresError, OSError) as exc:
        server.stop()
        _no_broker(str(exc), "PostgreSQL server")
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("CREATE DATABASE shop OWNER app")
            hba = server.data_dir / "pg_hba.conf"
            rule = "host all app 127.0.0.1/32 scram-sha-256\n"
            hba.write_text(rule + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def psycopg_and_choreo_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture psycopg's and choreo's log records, with redaction installed as the CLI does."""
    install_log_redaction()
    caplog.set_level(logging.DEBUG, logger="psycopg")
    caplog.set_level(logging.DEBUG, logger="choreo")
    return caplog


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_wrong_password_names_the_refused_login_and_never_the_password(
    secured_server: str, psycopg_and_choreo_logs: pytest.LogCaptureFixture
) -> None:
    """libpq's reason comes back at once (no pool retrying it), with a hint and no secret."""
    url = f"postgresql://app:{WRONG}@{secured_server}/shop?schema=rooms"
    with pytest.raises(ConfigurationError) as raised:
        open_store(url)
    message = str(raised.value)
    assert 'password authentication failed for user "app"' in message
    assert "$PGPASSWORD" in message and "~/.pgpass" in message
    assert f"postgresql://app:***@{secured_server}/shop" in message
    assert WRONG not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    logged = "\n".join(r.getMessage() for r in psycopg_and_choreo_logs.records)
    assert WRONG not in logged
    assert "error connecting in" not in logged  # the pool never started retrying


def test_the_password_may_come_from_pgpassword_and_stays_out_of_the_repr(
    secured_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL without a password plus $PGPASSWORD (off the command line) opens the store."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    store = open_store(f"postgresql://app@{secured_server}/shop?schema=rooms")
    try:
        assert isinstance(store, PostgresStore)
        assert PASSWORD not in repr(store)
    finally:
        store.close()
    right = open_store(f"postgresql://app:{PASSWORD}@{secured_server}/shop?schema=rooms")
    try:
        assert PASSWORD not in repr(right) and "app:***@" in repr(right)
    finally:
        right.close()


def test_a_server_that_is_down_fails_at_once_saying_so(
    psycopg_and_choreo_logs: pytest.LogCaptureFixture,
) -> None:
    """Nothing listening: libpq's 'Connection refused' at once, no pool retrying it."""
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{_free_port()}/shop"
    with pytest.raises(ConfigurationError) as raised:
        open_store(url)
    message = str(raised.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:")
    assert "Connection refused" in message
    assert PASSWORD not in message
    assert not [r for r in psycopg_and_choreo_logs.records if r.name == "psycopg.pool"]


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:p@{PASSWORD}@127.0.0.1:5432/shop",
        f"postgresql://app:{PASSWORD}/x@127.0.0.1/shop",
        f"postgres://app:{PASSWORD}@@127.0.0.1/shop?schema=rooms",
    ],
    ids=["at-in-password", "slash-in-password", "double-at"],  # the same in every worker
)
def test_a_password_with_an_unencoded_at_or_slash_is_refused_without_echoing_it(url: str) -> None:
    """Such a URL would name another host and leak part of the password in libpq's errors."""
    with pytest.raises(ConfigurationError) as raised:
        open_store(url)
    message = str(raised.value)
    assert "percent-encode" in message and "%40" in message
    assert PASSWORD not in message and "127.0.0.1" not in message


def test_psycopg_log_lines_never_show_a_store_password(
    postgres_url: str, psycopg_and_choreo_logs: pytest.LogCaptureFixture
) -> None:
    """Once a store was opened with a password, psycopg's loggers redact it like choreo's."""
    parts = urlsplit(postgres_url)
    secret = "Logged-" + uuid.uuid4().hex[:10]
    netloc = f"{parts.username}:{secret}@{parts.hostname}:{parts.port}"
    with contextlib.suppress(ConfigurationError):  # registered before it connects
        open_store(f"postgresql://{netloc}{parts.path}").close()
    logging.getLogger("psycopg.pool").warning("connection %s failed", f"password={secret} x")
    logging.getLogger("psycopg").warning("retrying %s", secret)
    logged = "\n".join(r.getMessage() for r in psycopg_and_choreo_logs.records)
    assert logged.count("***") >= 2
    assert secret not in logged


def test_a_schema_named_by_a_keyword_works(postgres_url: str) -> None:
    """``?schema=order`` (docker-compose's order service) is quoted, not a syntax error."""
    migration = Migration(1, "orders", "CREATE TABLE orders (id TEXT PRIMARY KEY)")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute('DROP SCHEMA IF EXISTS "order" CASCADE')
    try:
        for _ in range(2):  # the second open finds the schema and the migration applied
            store = open_store(f"{postgres_url}?schema=order")
            try:
                store.migrate("service:order", [migration])
                store.begin()
                execute(store.connection, "INSERT INTO orders VALUES (?)", (uuid.uuid4().hex,))
                store.commit()
            finally:
                store.close()
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute('SELECT count(*) FROM "order".orders').fetchone()
        assert row == (2,)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "order" CASCADE')


def test_a_sqlite_store_in_a_missing_directory_says_which_and_how_urls_spell_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///tmp/x.db`` is relative: the error names the directory and the four-slash form."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "data" / "rooms.db"
    with pytest.raises(ConfigurationError) as raised:
        open_store(f"sqlite://{target}")  # three slashes: relative to the working directory
    message = str(raised.value)
    assert f"its directory {str(tmp_path / tmp_path.relative_to('/') / 'data')!r}" in message
    assert "sqlite:////abs/x.db" in message
    target.parent.mkdir()
    store = open_store(f"sqlite:///{target}")  # four slashes: absolute
    try:
        assert isinstance(store, SqliteStore) and Path(store.path) == target
    finally:
        store.close()
    assert target.is_file()


def test_a_conninfo_string_is_refused_not_taken_for_a_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``host=… password=…`` is a libpq conninfo: no SQLite file of that name is created."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as raised:
        open_store(f"host=127.0.0.1 user=app password={PASSWORD} dbname=shop")
    assert "conninfo" in str(raised.value) and "postgresql://" in str(raised.value)
    assert PASSWORD not in str(raised.value)
    assert list(tmp_path.iterdir()) == []
