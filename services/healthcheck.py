"""``python -m services.healthcheck SERVICE``: exit 0 once SERVICE's worker prepared its store.

A worker applies its service's migrations to its store (``$CHOREO_STORE``) right before it
joins its consumer group, so the service's row in ``choreo_schema_version`` says the
worker is up. Used by docker-compose's health checks. Exits 1 (with the reason on stderr,
the store's password hidden) otherwise.
"""

from __future__ import annotations

import os
import sys

import click

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Return 0 when the service named in ``argv`` has migrations applied in its store."""
    from choreo.errors import ChoreoError
    from choreo.store import STORE_ENV, execute, open_store, service_component

    args = sys.argv[1:] if argv is None else argv
    url = os.environ.get(STORE_ENV, "")
    if len(args) != 1 or not url:
        click.echo(f"usage: {STORE_ENV}=URL python -m services.healthcheck SERVICE", err=True)
        return 2
    try:
        store = open_store(url)
    except ChoreoError as exc:
        click.echo(f"store not reachable: {exc}", err=True)
        return 1
    try:
        store.begin()
        try:
            row = execute(
                store.connection,
                "SELECT count(*) FROM choreo_schema_version WHERE component = ?",
                (service_component(args[0]),),
            ).fetchone()
        finally:
            store.rollback()
    except Exception as exc:
        click.echo(f"{args[0]} has not prepared its store: {type(exc).__name__}", err=True)
        return 1
    finally:
        store.close()
    return 0 if row and row[0] else 1


if __name__ == "__main__":  # pragma: no cover - python -m services.healthcheck
    sys.exit(main())
