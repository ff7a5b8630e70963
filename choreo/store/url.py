"""Choosing a store by URL (``choreo run --store``, ``$CHOREO_STORE``) and hiding its password.

- ``postgresql://user:password@host:5432/db`` (or ``postgres://``; ``?schema=name``
  selects a schema): a :class:`~choreo.store.postgres.PostgresStore`;
- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a plain file path (a
  ``?durability=normal`` query trades durability for speed): a
  :class:`~choreo.store.sqlite.SqliteStore`;
- ``memory:``: a :class:`~choreo.store.memory.MemoryStore` (smoke runs only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from choreo.errors import ConfigurationError
from choreo.safety.redact import redact_text

if TYPE_CHECKING:
    from choreo.store.base import Store
    from choreo.store.sqlite import Durability

__all__ = ["STORE_ENV", "open_store", "split_schema", "sqlite_file"]

_CONNINFO = re.compile(r"(?:^|\s)(?:host|hostaddr|dbname|user|password|port)\s*=")

STORE_ENV = "CHOREO_STORE"
"""The environment variable that selects a worker's store when ``--store`` is not given."""


def _sqlite_path(url: str) -> tuple[Path, str]:
    """Return the file path and durability of a ``sqlite:`` URL or plain path."""
    if not url.startswith("sqlite:"):
        return Path(url), "full"
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError("a sqlite URL has no host: use sqlite:///path/to/file.db")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError("the sqlite URL names no file: use sqlite:///path/to/file.db")
    durability = parse_qs(parts.query).get("durability", ["full"])[-1]
    return Path(path), durability


def split_schema(url: str) -> tuple[str, str | None]:
    """Return a ``postgresql://`` URL without its ``schema`` query parameter, and that schema.

    libpq does not know ``schema``: it is choreo's way to put a service's tables in a
    schema of their own (None when the URL names none).
    """
    parts = urlsplit(url)
    params = parse_qs(parts.query, keep_blank_values=True)
    schema = params.pop("schema", [None])[-1]
    query = urlencode([(k, v) for k, vs in params.items() for v in vs])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)), schema


def sqlite_file(url: str) -> Path:
    """Return the file a ``sqlite:`` URL (or a plain path) names."""
    return _sqlite_path(url)[0]


def open_store(url: str) -> Store:
    """Return the store ``url`` names (see the module docs); raise ConfigurationError if bad.

    Error messages show the URL with its password hidden.
    """
    url = url.strip()
    if not url:
        raise ConfigurationError("the store URL is empty")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("postgresql", "postgres"):
        from choreo.store.postgres import PostgresStore

        bare, schema = split_schema(url)
        return PostgresStore(bare, schema=schema)
    if scheme == "memory":
        from choreo.store.memory import MemoryStore

        return MemoryStore()
    if scheme == "" and _CONNINFO.search(url):
        raise ConfigurationError(
            f"the store {redact_text(url)!r} looks like a libpq conninfo string, not a file "
            "path: give a postgresql://user@host:5432/db URL"
        )
    if scheme in ("sqlite", "") or len(scheme) == 1:  # a plain path (or a Windows drive)
        from choreo.store.sqlite import SqliteStore

        path, durability = _sqlite_path(url)
        if durability not in ("full", "normal", "off"):
            raise ConfigurationError(f"unknown sqlite durability {durability!r}")
        return SqliteStore(path, durability=cast("Durability", durability))
    raise ConfigurationError(
        f"unknown store {redact_text(url)!r}: use postgresql://…, sqlite:///path or memory:"
    )
