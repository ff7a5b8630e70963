"""Applying versioned migrations: choreo's own tables and a service's declared ones.

Every component (``choreo`` for choreo's tables, ``service:<name>`` for a service) has its
applied versions in ``choreo_schema_version``. :func:`apply_migrations` runs, inside ONE
transaction the caller opened (and serialised: SQLite's write lock, PostgreSQL's advisory
lock), every migration whose version is not recorded yet, in version order, recording each.
Re-running it is a no-op, so N replicas starting together apply each migration once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from choreo.errors import ConfigurationError
from choreo.store.base import Migration
from choreo.store.sql import execute

__all__ = ["VERSION_TABLE", "apply_migrations", "check_migrations"]

logger = logging.getLogger(__name__)

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS choreo_schema_version (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL,
    PRIMARY KEY (component, version))"""


def check_migrations(component: str, migrations: Sequence[Migration]) -> list[Migration]:
    """Return ``migrations`` sorted by version; raise ConfigurationError on a repeated one."""
    ordered = sorted(migrations, key=lambda migration: migration.version)
    for before, after in pairwise(ordered):
        if before.version == after.version:
            raise ConfigurationError(f"{component}: migration version {after.version} is repeated")
    return ordered


def apply_migrations(
    conn: Any, dialect: str, component: str, migrations: Sequence[Migration], now_ms: int
) -> list[int]:
    """Apply ``component``'s unapplied ``migrations`` on ``conn`` (in its open transaction).

    Returns the versions applied. The caller commits (or rolls back on an exception).
    """
    ordered = check_migrations(component, migrations)
    conn.execute(VERSION_TABLE)
    rows = execute(
        conn, "SELECT version FROM choreo_schema_version WHERE component = ?", (component,)
    ).fetchall()
    done = {int(row[0]) for row in rows}
    applied: list[int] = []
    for migration in ordered:
        if migration.version in done:
            continue
        migration.run(conn, dialect)
        execute(
            conn,
            "INSERT INTO choreo_schema_version (component, version, description, applied_at_ms)"
            " VALUES (?, ?, ?, ?)",
            (component, migration.version, migration.description[:200], now_ms),
        )
        applied.append(migration.version)
        logger.info(
            "%s: applied migration %d (%s)", component, migration.version, migration.description
        )
    return applied
