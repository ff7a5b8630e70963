"""The SQLite inbox's lookup of seen ids: exact answers, and a bounded set of statements.

A worker's batches have any size from 1 to ``max_poll_records``; a lookup statement per
size would fill the connection's statement cache (128 prepared statements, about 10 MB of
SQLite memory at 500-record batches) one new batch size at a time, which a long soak saw
as RSS growing for minutes.
"""

from __future__ import annotations

import re

from choreo.store import SqliteStore

_IN_LIST = re.compile(r"IN \(([^)]*)\)")


def _store_with(ids: list[str]) -> SqliteStore:
    store = SqliteStore(":memory:")
    store.begin()
    store.add("svc", ids, 1)
    store.add("other", ["x-0", "x-1"], 1)
    store.commit()
    return store


def test_seen_answers_exactly_for_every_size_and_across_chunks() -> None:
    handled = [f"e-{i}" for i in range(0, 1400, 3)]
    store = _store_with(handled)
    for size in (1, 2, 3, 5, 63, 64, 65, 300, 511, 512, 513, 1025, 1400):
        asked = [f"e-{i}" for i in range(size)]
        assert store.seen("svc", asked) == {f"e-{i}" for i in range(0, size, 3)}, size
    assert store.seen("svc", ["x-0", "e-0", "e-0", "e-1"]) == {"e-0"}  # repeats, other consumer
    assert store.seen("svc", []) == set()
    store.close()


def test_lookups_of_every_batch_size_use_at_most_ten_statements() -> None:
    store = _store_with([f"e-{i}" for i in range(0, 700, 2)])
    lengths: set[int] = set()

    def trace(sql: str) -> None:
        match = _IN_LIST.search(sql)
        if match is not None:
            lengths.add(match.group(1).count(",") + 1)

    store.connection.set_trace_callback(trace)
    for size in range(1, 701):
        found = store.seen("svc", [f"e-{i}" for i in range(size)])
        assert len(found) == (size + 1) // 2
    store.connection.set_trace_callback(None)
    assert lengths == {1 << k for k in range(10)}  # 1, 2, 4, ..., 512 and nothing else
    store.close()
