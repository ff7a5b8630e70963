"""One contract for the inbox stores, run against MemoryInbox and SqliteInbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo.runtime import Inbox, MemoryInbox, OutboxRecord, SqliteInbox


def _record(i: int, topic: str = "t") -> OutboxRecord:
    return OutboxRecord(f"id-{i}", topic, f"k{i}".encode(), f"v{i}".encode(), [("h", b"%d" % i)])


@pytest.fixture(params=["memory", "sqlite"])
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inbox]:
    """Yield an empty store of each kind."""
    store: Inbox = MemoryInbox() if request.param == "memory" else SqliteInbox(tmp_path / "i.db")
    yield store
    store.close()


def _commit(
    inbox: Inbox, *, ids: list[str] | None = None, records: list[OutboxRecord] | None = None
) -> None:
    inbox.begin()
    inbox.add("g", ids or [], 1000)
    inbox.enqueue("o", records or [])
    inbox.commit()


def test_both_stores_satisfy_the_protocol(inbox: Inbox) -> None:
    """MemoryInbox and SqliteInbox are Inbox implementations."""
    assert isinstance(inbox, Inbox)


def test_committed_ids_are_seen_per_consumer(inbox: Inbox) -> None:
    """Ids recorded for one consumer are seen by it and not by another."""
    _commit(inbox, ids=["a", "b"])
    assert inbox.seen("g", ["a", "b", "c"]) == {"a", "b"}
    assert inbox.seen("other", ["a"]) == set()


def test_rollback_forgets_ids_and_records(inbox: Inbox) -> None:
    """Nothing written in a rolled-back transaction is kept."""
    inbox.begin()
    inbox.add("g", ["a"], 1000)
    inbox.enqueue("o", [_record(1)])
    inbox.rollback()
    assert inbox.seen("g", ["a"]) == set()
    assert inbox.pending("o") == []


def test_outbox_keeps_order_per_origin_and_forgets_sent_records(inbox: Inbox) -> None:
    """Pending records come back in storing order; marked ones are gone after commit."""
    _commit(inbox, records=[_record(1), _record(2)])
    _commit(inbox, records=[_record(3)])
    inbox.begin()
    inbox.enqueue("elsewhere", [_record(9)])
    inbox.commit()
    pending = inbox.pending("o")
    assert [r.id for r in pending] == ["id-1", "id-2", "id-3"]
    assert pending[0] == _record(1)._replace(headers=pending[0].headers)
    assert list(pending[0].headers) == [("h", b"1")]
    inbox.begin()
    inbox.mark_sent(["id-1", "id-3"])
    inbox.commit()
    assert [r.id for r in inbox.pending("o")] == ["id-2"]
    assert [r.id for r in inbox.pending("elsewhere")] == ["id-9"]


def test_prune_forgets_old_ids_only(inbox: Inbox) -> None:
    """prune removes a consumer's ids handled before the cut-off."""
    inbox.begin()
    inbox.add("g", ["old"], 1000)
    inbox.add("g", ["new"], 5000)
    inbox.add("h", ["old"], 1000)
    inbox.commit()
    inbox.begin()
    assert inbox.prune("g", 2000) == 1
    inbox.commit()
    assert inbox.seen("g", ["old", "new"]) == {"new"}
    assert inbox.seen("h", ["old"]) == {"old"}


def test_transactions_of_two_threads_do_not_interleave(inbox: Inbox) -> None:
    """A second begin() waits until the first transaction commits."""
    inbox.begin()
    inbox.add("g", ["first"], 1)
    entered = threading.Event()

    def second() -> None:
        inbox.begin()
        entered.set()
        inbox.add("g", ["second"], 2)
        inbox.commit()

    thread = threading.Thread(target=second)
    thread.start()
    assert not entered.wait(0.2)
    inbox.commit()
    thread.join(5)
    assert inbox.seen("g", ["first", "second"]) == {"first", "second"}


def test_sqlite_rows_survive_a_reopen_and_savepoints_undo_handler_writes(tmp_path: Path) -> None:
    """A reopened SqliteInbox sees committed ids and outbox; a rolled-back savepoint is undone."""
    path = tmp_path / "durable.db"
    inbox = SqliteInbox(path)
    db = inbox.connection
    db.execute("CREATE TABLE stock (sku TEXT)")
    inbox.begin()
    inbox.savepoint()
    db.execute("INSERT INTO stock VALUES ('lost')")
    inbox.rollback_to_savepoint()
    inbox.savepoint()
    db.execute("INSERT INTO stock VALUES ('kept')")
    inbox.release_savepoint()
    inbox.add("g", ["a"], 1)
    inbox.enqueue("o", [_record(1)])
    inbox.commit()
    inbox.close()

    again = SqliteInbox(path)
    assert again.seen("g", ["a"]) == {"a"}
    assert [r.id for r in again.pending("o")] == ["id-1"]
    assert again.connection.execute("SELECT sku FROM stock").fetchall() == [("kept",)]
    assert again.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.begin()
    again.mark_sent(["id-1"])
    again.commit()
    assert again.pending("o") == []
    again.close()


def test_sqlite_seen_handles_batches_above_the_parameter_limit(tmp_path: Path) -> None:
    """seen() with 2,000 ids (over SQLite's 999 bound parameters) finds them all."""
    inbox = SqliteInbox(tmp_path / "big.db")
    ids = [f"e{i}" for i in range(2000)]
    _commit(inbox, ids=ids)
    assert inbox.seen("g", [*ids, "missing"]) == set(ids)
    inbox.close()
