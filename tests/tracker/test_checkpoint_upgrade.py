"""A checkpoint written by an earlier version (packed events in the first form, ``0xF2``)
loads in this one: every saga reads back as a fresh fold of its records gives it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from tracker_log import T0, to_records

from choreo.model.envelope import Envelope, Role
from choreo.tracker import CheckpointStore, Tracker
from choreo.transports.base import Record

FIXTURES = Path(__file__).parent / "fixtures"


def _records() -> list[Record]:
    """The records the fixture's checkpoint was written from (4 sagas, 13 events: UUID ids,
    an id that is not a UUID, an upper-case UUID, a cause outside its saga, one running)."""
    rows = json.loads((FIXTURES / "checkpoint-0xf2.json").read_text())
    return [
        Record(topic=row["topic"], partition=row["partition"], offset=row["offset"],
               key=row["key"].encode(), value=b"payload",
               headers=tuple((name, value.encode()) for name, value in row["headers"]),
               timestamp_ms=row["timestamp_ms"])
        for row in rows
    ]


def _markers(path: Path) -> list[int]:
    with sqlite3.connect(path) as connection:
        return sorted(bytes(blob)[0] for (blob,) in connection.execute("SELECT events FROM sagas"))


def test_a_checkpoint_of_the_first_packed_form_loads_and_is_rewritten(tmp_path: Path) -> None:
    """The fixture was written by the code before the 16-byte UUID form (its packed events
    all in the first form). This version loads it, resumes past its offsets, folds a late
    event into a stored saga, and writes that saga back in the new form."""
    path = tmp_path / "tracker.sqlite"
    shutil.copy(FIXTURES / "checkpoint-0xf2.sqlite", path)
    assert _markers(path) == [0xF2] * 4
    records = _records()
    fresh = Tracker()
    fresh.feed_many(records)
    cids = {record.key.decode() for record in records if record.key}
    with CheckpointStore(path) as store:
        loaded = Tracker(checkpoint=store, keep_finished=0)
        assert loaded.total() == len(cids) == 4
        for cid in cids:
            assert loaded.get(cid) == fresh.get(cid)
        loaded.feed_many(records)  # re-delivered from the start: all skipped
        assert loaded.stats.skipped == len(records)
        traces = {cid: loaded.get(cid) for cid in cids}
        done, trace = next((c, t) for c, t in traces.items()
                           if t is not None and t.state.value == "Completed")
        notice = Envelope(
            event_type="trk.Notified", event_id="6f1c1d5e-8d0b-4a52-9c43-0b3e4a7f9e21",
            correlation_id=done, saga=trace.saga, role=Role.NOTICE, service="notification",
            produced_at_ms=T0 + 60_000, causation_id=trace.events[-1].event_id,
        )
        late = to_records([notice])
        loaded.feed_many(late)
        fresh.feed_many(late)
        assert loaded.get(done) == fresh.get(done)
        assert loaded.checkpoint() >= 1
    assert 0xF5 in _markers(path)  # the saga written again, in the new form
    with CheckpointStore(path) as store:
        again = Tracker(checkpoint=store)
        for cid in cids:
            assert again.get(cid) == fresh.get(cid)
