"""The contract every store honours, as a pytest test class to subclass per store.

:class:`StoreContract` holds what every :class:`~choreo.store.base.Store` must do: the
inbox (handled ids per consumer, claims released when not handled, pruning), the outbox
(order per origin, acknowledged rows deleted), one transaction at a time per store object,
durability across a reopen, savepoints around a handler's writes, versioned migrations
applied once per database, and the relay (another writer's rows, never before a publish
succeeded). choreo runs it against :class:`~choreo.store.memory.MemoryStore`,
:class:`~choreo.store.sqlite.SqliteStore` and :class:`~choreo.store.postgres.PostgresStore`
(on a real server); the author of another store runs it against theirs::

    # tests/test_my_store_contract.py
    import pytest

    from choreo.testing.store_contract import StoreContract, StoreFactory
    from my_package import MyStore


    class TestMyStore(StoreContract):
        \"\"\"MyStore honours choreo's store contract.\"\"\"

        @pytest.fixture
        def open_same(self, tmp_path) -> StoreFactory:
            return lambda: MyStore(tmp_path / "db")  # every call: one more object, same data

A durable store (``durable = True``: its rows outlive the object and the process)
subclasses :class:`DurableStoreContract` instead, which adds the reopen, migration-failure
and relay tests; the contract fails a durable store tested as a non-durable one. This
module imports pytest, which :mod:`choreo.testing` itself does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from choreo.errors import ConfigurationError
from choreo.store import Migration, OutboxRecord, Store, execute

__all__ = ["StoreContract", "StoreFactory"]

StoreFactory = Callable[[], Store]
"""Opens one more store object on the same database (another process, a restart)."""


def _record(i: int, topic: str = "t", key: bytes | None = None) -> OutboxRecord:
    return OutboxRecord(
        f"id-{i}", topic, key or f"k{i}".encode(), f"v{i}".encode(), [("h", b"%d" % i)]
    )


def _commit(
    store: Store, *, ids: list[str] | None = None, records: list[OutboxRecord] | None = None
) -> None:
    store.begin()
    store.seen("g", ids or [])
    store.add("g", ids or [], 1000)
    store.enqueue("o", records or [])
    store.commit()


class _Sink:
    """A publish callback that records what it was given, or fails when told to."""

    def __init__(self) -> None:
        self.published: list[OutboxRecord] = []
        self.fail = False

    def __call__(self, records: Sequence[OutboxRecord]) -> None:
        if self.fail:
            raise RuntimeError("broker unavailable")
        self.published.extend(records)


class StoreContract:
    """What every store does; a subclass provides ``open_same`` (see the module docs)."""

    @pytest.fixture
    def open_same(self) -> StoreFactory:
        """Return a factory of store objects on one fresh database (subclasses override)."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, open_same: StoreFactory) -> Store:
        """Return an empty store."""
        return open_same()

    def test_every_store_satisfies_the_protocol(self, store: Store) -> None:
        """The store satisfies the Store protocol; a shared store is a durable one."""
        assert isinstance(store, Store)
        assert store.paramstyle in ("qmark", "numeric", "named", "format", "pyformat")
        assert store.durable or not store.shared  # replicas cannot share what a crash loses
        assert not store.durable or isinstance(self, DurableStoreContract), (
            "a durable store runs DurableStoreContract"
        )

    def test_committed_ids_are_seen_per_consumer(self, store: Store) -> None:
        """Ids recorded for one consumer are seen by it and not by another."""
        _commit(store, ids=["a", "b"])
        assert store.seen("g", ["a", "b", "c"]) == {"a", "b"}
        assert store.seen("other", ["a"]) == set()

    def test_ids_claimed_but_not_added_are_not_recorded(self, store: Store) -> None:
        """An id seen (claimed) in a batch but never added stays unhandled after commit."""
        store.begin()
        assert store.seen("g", ["x", "y"]) == set()
        store.add("g", ["x"], 1000)
        store.commit()
        assert store.seen("g", ["x", "y"]) == {"x"}

    def test_rollback_forgets_ids_and_records(self, store: Store) -> None:
        """Nothing written in a rolled-back transaction is kept."""
        store.begin()
        store.seen("g", ["a"])
        store.add("g", ["a"], 1000)
        store.enqueue("o", [_record(1)])
        store.rollback()
        assert store.seen("g", ["a"]) == set()
        assert store.pending("o") == []

    def test_outbox_keeps_order_per_origin_and_forgets_sent_records(self, store: Store) -> None:
        """Pending records come back in storing order; marked ones are gone after commit."""
        _commit(store, records=[_record(1), _record(2)])
        _commit(store, records=[_record(3)])
        store.begin()
        store.enqueue("elsewhere", [_record(9)])
        store.commit()
        pending = store.pending("o")
        assert [r.id for r in pending] == ["id-1", "id-2", "id-3"]
        assert pending[0] == _record(1)._replace(headers=pending[0].headers)
        assert list(pending[0].headers) == [("h", b"1")]
        assert store.outbox_size("o") == 3
        store.begin()
        store.mark_sent(["id-1", "id-3"])
        store.commit()
        assert [r.id for r in store.pending("o")] == ["id-2"]
        assert store.outbox_size("o") == 1
        assert [r.id for r in store.pending("elsewhere")] == ["id-9"]

    def test_outbox_size_counts_an_origin_s_unsent_records(self, store: Store) -> None:
        """outbox_size is the number of pending records of that origin (the backlog gauge)."""
        assert store.outbox_size("o") == 0
        _commit(store, records=[_record(1), _record(2), _record(3)])
        store.begin()
        store.enqueue("elsewhere", [_record(9)])
        store.commit()
        assert store.outbox_size("o") == len(store.pending("o")) == 3
        store.begin()
        store.mark_sent(["id-2"])
        store.commit()
        assert (store.outbox_size("o"), store.outbox_size("elsewhere")) == (2, 1)

    def test_prune_forgets_old_ids_only(self, store: Store) -> None:
        """prune removes a consumer's ids handled before the cut-off."""
        store.begin()
        store.add("g", ["old"], 1000)
        store.add("g", ["new"], 5000)
        store.add("h", ["old"], 1000)
        store.commit()
        store.begin()
        assert store.prune("g", 2000) == 1
        store.commit()
        assert store.seen("g", ["old", "new"]) == {"new"}
        assert store.seen("h", ["old"]) == {"old"}

    def test_transactions_of_two_threads_do_not_interleave(self, store: Store) -> None:
        """A second begin() waits until the first transaction commits."""
        store.begin()
        store.add("g", ["first"], 1)
        entered = threading.Event()

        def second() -> None:
            store.begin()
            entered.set()
            store.add("g", ["second"], 2)
            store.commit()

        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.2)
        store.commit()
        thread.join(5)
        assert store.seen("g", ["first", "second"]) == {"first", "second"}

    def test_migrations_apply_once_in_order_per_component(self, open_same: StoreFactory) -> None:
        """New migrations run once, in version order; a second store (replica) applies none."""
        store = open_same()
        if not store.durable:  # no tables: checked, nothing applied
            assert store.migrate("service:x", [Migration(1, "t", "CREATE TABLE t (a INT)")]) == []
            return
        migrations = [
            Migration(2, "add b", "ALTER TABLE t ADD COLUMN b INTEGER"),
            Migration(1, "create t", ["CREATE TABLE t (a INTEGER)"]),
        ]
        assert store.migrate("service:x", migrations) == [1, 2]
        assert store.migrate("service:x", migrations) == []
        other = open_same()
        more = [
            *migrations,
            Migration(
                3,
                "add c",
                {
                    "sqlite": "ALTER TABLE t ADD COLUMN c TEXT",
                    "postgresql": "ALTER TABLE t ADD c TEXT",
                },
            ),
        ]
        assert other.migrate("service:x", more) == [3]
        assert other.migrate("service:y", [Migration(1, "u", "CREATE TABLE u (a INTEGER)")]) == [1]
        other.begin()
        execute(other.connection, "INSERT INTO t (a, b, c) VALUES (?, ?, ?)", (1, 2, "x"))
        versions = execute(
            other.connection,
            "SELECT component, version FROM choreo_schema_version WHERE component <> ?"
            " ORDER BY component, version",
            ("choreo",),
        ).fetchall()
        other.commit()
        assert [tuple(v) for v in versions] == [
            ("service:x", 1),
            ("service:x", 2),
            ("service:x", 3),
            ("service:y", 1),
        ]

    def test_repeated_migration_versions_are_refused(self, store: Store) -> None:
        """Two migrations with one version are a configuration error."""
        with pytest.raises(ConfigurationError, match="repeated"):
            store.migrate(
                "service:r", [Migration(1, "a", "SELECT 1"), Migration(1, "b", "SELECT 2")]
            )


class DurableStoreContract(StoreContract):
    """What a durable store does besides: rows outlive the store object and the process.

    Subclass it instead of :class:`StoreContract` for a store with ``durable = True``
    (SQLite, PostgreSQL): a reopen sees committed rows, migrations create real tables, and
    the relay publishes rows another (dead) writer left behind.
    """

    def test_durable_rows_survive_a_reopen_and_savepoints_undo_handler_writes(
        self, open_same: StoreFactory
    ) -> None:
        """A reopened store sees committed ids, outbox and tables; undone savepoints are gone."""
        store = open_same()
        store.migrate("service:test", [Migration(1, "stock", "CREATE TABLE stock (sku TEXT)")])
        store.begin()
        store.savepoint()
        execute(store.connection, "INSERT INTO stock VALUES (?)", ("lost",))
        store.rollback_to_savepoint()
        store.savepoint()
        execute(store.connection, "INSERT INTO stock VALUES (?)", ("kept",))
        store.release_savepoint()
        store.seen("g", ["a"])
        store.add("g", ["a"], 1)
        store.enqueue("o", [_record(1)])
        store.commit()
        store.close()

        again = open_same()
        assert again.seen("g", ["a"]) == {"a"}
        assert [r.id for r in again.pending("o")] == ["id-1"]
        again.begin()
        rows = execute(again.connection, "SELECT sku FROM stock").fetchall()
        again.mark_sent(["id-1"])
        again.commit()
        assert [tuple(row) for row in rows] == [("kept",)]
        assert again.pending("o") == []

    def test_a_failing_migration_applies_nothing(self, open_same: StoreFactory) -> None:
        """A migration that fails leaves no version recorded and no partial change."""
        store = open_same()
        broken = [
            Migration(1, "ok", "CREATE TABLE v (a INTEGER)"),
            Migration(2, "broken", "THIS IS NOT SQL"),
        ]
        with pytest.raises(Exception, match=r"(?i)syntax"):
            store.migrate("service:z", broken)
        assert store.migrate("service:z", broken[:1]) == [1]

    def test_relay_takes_another_writers_rows_only_after_publish_succeeds(
        self, open_same: StoreFactory
    ) -> None:
        """Another store relays a dead writer's rows in order; a failed publish keeps them."""
        dead = open_same()
        _commit(dead, records=[_record(1, key=b"c1"), _record(2, key=b"c2"), _record(3, key=b"c1")])
        live = open_same()
        sink = _Sink()
        assert live.relay("o", min_age_ms=60_000, limit=10, publish=sink) == 0  # too young
        assert dead.relay("o", min_age_ms=0, limit=10, publish=sink) == 0  # its own rows
        sink.fail = True
        with pytest.raises(RuntimeError):
            live.relay("o", min_age_ms=0, limit=10, publish=sink)
        assert [r.id for r in live.pending("o")] == ["id-1", "id-2", "id-3"]
        sink.fail = False
        first = live.relay("o", min_age_ms=0, limit=1, publish=sink)
        assert first >= 1  # a store keeping whole batches per row may exceed the limit
        rest = live.relay("o", min_age_ms=0, limit=10, publish=sink)
        assert first + rest == 3
        assert live.relay("o", min_age_ms=0, limit=10, publish=sink) == 0
        assert [r.id for r in sink.published] == ["id-1", "id-2", "id-3"]
        assert sink.published[0].key == b"c1"
        assert live.pending("o") == []
        assert live.outbox_size("o") == 0
