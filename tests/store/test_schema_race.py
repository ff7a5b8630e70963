"""Replicas that start at the same moment on a new schema all start (PostgreSQL)."""

from __future__ import annotations

import threading
import uuid

from choreo.store.postgres import PostgresStore


def test_replicas_creating_the_same_new_schema_at_once_all_start(postgres_url: str) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` is not atomic: two sessions that both find the
    schema missing both insert it, and one fails on pg_namespace's unique index (a chaos
    run's replica exited on it). Eight stores opened at once on each of ten new schemas:
    every one opens."""
    failures: list[BaseException] = []
    for _ in range(10):
        schema = f"race_{uuid.uuid4().hex[:10]}"
        start = threading.Barrier(8)
        stores: list[PostgresStore] = []

        def open_store(
            name: str = schema,
            barrier: threading.Barrier = start,
            opened: list[PostgresStore] = stores,
        ) -> None:
            barrier.wait()
            try:
                opened.append(PostgresStore(postgres_url, schema=name))
            except BaseException as exc:  # every failure is the finding
                failures.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for store in stores:
            store.close()
    assert failures == []
