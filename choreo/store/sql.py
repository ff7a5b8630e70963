"""Portable SQL on the connections choreo hands out: one placeholder style for both stores.

``ctx.db`` is the store's raw DB-API connection: :mod:`sqlite3` (paramstyle ``qmark``,
``?``) or psycopg 3 (paramstyle ``format``, ``%s``). Code that must run on both writes its
SQL with ``?`` placeholders and runs it through :func:`execute` / :func:`executemany`,
which convert the placeholders for psycopg (and double a literal ``%``). Code written for
one database uses the connection directly, in its own style. Both connections offer
``execute`` returning a cursor with ``fetchone``/``fetchall``, and ``rowcount``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["dialect_of", "execute", "executemany", "paramstyle_of", "to_format"]


def paramstyle_of(conn: Any) -> str:
    """Return the DB-API paramstyle of ``conn``: ``"qmark"`` for SQLite, else its module's."""
    if isinstance(conn, sqlite3.Connection):
        return "qmark"
    module = type(conn).__module__.split(".", 1)[0]
    if module == "psycopg":
        return "format"
    imported = __import__(module)
    return str(getattr(imported, "paramstyle", "qmark"))


def dialect_of(conn: Any) -> str:
    """Return ``"sqlite"`` or ``"postgresql"`` for a connection choreo handed out."""
    return "sqlite" if isinstance(conn, sqlite3.Connection) else "postgresql"


@lru_cache(maxsize=512)
def to_format(sql: str) -> str:
    """Return ``sql`` with ``?`` placeholders as ``%s`` and literal ``%`` doubled.

    Question marks inside single-quoted strings and double-quoted identifiers are left
    alone (comments are not parsed: keep ``?`` out of them).
    """
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            out.append("%%" if char == "%" else char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


def _adapt(conn: Any, sql: str) -> str:
    """Return ``sql`` (written with ``?``) in ``conn``'s placeholder style."""
    return sql if isinstance(conn, sqlite3.Connection) else to_format(sql)


def execute(conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` (with ``?`` placeholders) on ``conn`` and return the cursor."""
    return conn.execute(_adapt(conn, sql), params)


def executemany(conn: Any, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
    """Run ``sql`` (with ``?`` placeholders) once per row of ``rows`` on ``conn``."""
    if isinstance(conn, sqlite3.Connection):
        return conn.executemany(sql, rows)
    cursor = conn.cursor()
    cursor.executemany(to_format(sql), list(rows))
    return cursor
