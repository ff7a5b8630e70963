"""The memory store's inbox is bounded: it remembers the latest ``max_ids`` ids per consumer.

Without a bound it kept every id handled within ``inbox_retention`` (a week by default):
at a steady 100 events/s, 60 million ids.
"""

from __future__ import annotations

import pytest

from choreo.errors import ConfigurationError
from choreo.store import MemoryStore


def _handle(store: MemoryStore, consumer: str, ids: list[str], batch: int) -> None:
    for start in range(0, len(ids), batch):
        store.begin()
        store.add(consumer, ids[start : start + batch], 1)
        store.commit()


def test_the_inbox_keeps_the_latest_max_ids_and_at_most_a_quarter_more() -> None:
    store = MemoryStore(max_ids=100)
    ids = [f"e-{i}" for i in range(1000)]
    _handle(store, "svc", ids, 7)
    remembered = store.seen("svc", ids)
    assert set(ids[-100:]) <= remembered  # the latest max_ids: duplicates still dropped
    assert 100 <= len(remembered) <= 125
    kept = sorted(int(i.removeprefix("e-")) for i in remembered)
    assert kept == list(range(kept[0], 1000))  # the oldest went first, nothing in between
    assert store.seen("svc", ["e-0", "e-500"]) == set()


def test_each_consumer_has_its_own_bound_and_prune_still_applies() -> None:
    store = MemoryStore(max_ids=10)
    _handle(store, "a", [f"a-{i}" for i in range(50)], 50)
    _handle(store, "b", ["b-0", "b-1"], 2)
    assert store.seen("a", [f"a-{i}" for i in range(40, 50)]) == {f"a-{i}" for i in range(40, 50)}
    assert store.seen("b", ["b-0", "b-1"]) == {"b-0", "b-1"}
    assert store.prune("a", 2) == 10
    assert store.seen("a", [f"a-{i}" for i in range(50)]) == set()


def test_max_ids_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        MemoryStore(max_ids=0)
