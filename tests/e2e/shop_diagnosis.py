"""What a failed shop run left behind: lost events or events the test's tracker did not read.

When sagas the test started never show up in its tracker, :func:`diagnose_missing` says
for each missing correlation id whether its events are in the topics at all (read back
by a fresh consumer from the beginning), whether its start event is still in the order
service's outbox, and how far the tracker had read each partition compared to its end.
That tells a lost start event (never published, or published and not acknowledged) from
one the tracker's consumer skipped.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from choreo.model.envelope import Header
from choreo.store.outbox import unpack_headers
from choreo.tracker import Tracker
from choreo.tracker.entries import TERMINAL_STATES
from choreo.tracker.live import read_topics
from choreo.transports.base import TopicPartition, Transport

__all__ = ["diagnose_missing", "missing_sagas"]

_SHOWN = 10  # missing ids described one by one (the rest are counted)


def missing_sagas(tracker: Tracker, started: Iterable[str]) -> list[str]:
    """Return the correlation ids among ``started`` that ``tracker`` has never seen."""
    return [cid for cid in started if tracker.get(cid) is None]


def _in_log(transport: Transport, topics: Sequence[str], wanted: set[str]) -> dict[str, list[str]]:
    """Return, per wanted correlation id, where its records are in ``topics`` (read afresh)."""
    found: dict[str, list[str]] = {cid: [] for cid in wanted}
    for record in read_topics(transport, topics, idle_timeout=3.0):
        headers = dict(record.headers)
        cid = headers.get(Header.CORRELATION_ID, b"").decode(errors="replace")
        if cid in found:
            kind = headers.get(Header.EVENT_TYPE, b"?").decode(errors="replace")
            found[cid].append(f"{kind}@{record.topic}[{record.partition}]:{record.offset}")
    return found


def _in_outbox(path: Path, wanted: set[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Return the outbox's row count per origin and, per wanted id, the origin holding it."""
    if not path.exists():
        return {}, {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        counts = dict(conn.execute("SELECT origin, COUNT(*) FROM choreo_outbox GROUP BY origin"))
        held: dict[str, str] = {}
        for origin, blob in conn.execute("SELECT origin, headers FROM choreo_outbox"):
            cid = dict(unpack_headers(blob)).get(Header.CORRELATION_ID, b"").decode()
            if cid in wanted:
                held[cid] = str(origin)
        return counts, held
    finally:
        conn.close()


def _lag(
    transport: Transport, tracker: Tracker, topics: Sequence[str], partitions: int
) -> list[str]:
    """Return the partitions the tracker has not read to their end ("topic[p] read/end")."""
    consumer = transport.consumer(f"e2e-diagnosis-{uuid.uuid4().hex[:8]}", from_beginning=True)
    try:
        wanted = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
        ends_of = getattr(consumer, "high_watermarks", None)  # not every transport has it
        ends: dict[TopicPartition, int] = ends_of(wanted, timeout=5.0) if ends_of else {}
    finally:
        consumer.close()
    read = tracker.offsets()
    return [
        f"{tp.topic}[{tp.partition}] {read.get(tp, 0)}/{end}"
        for tp, end in sorted(ends.items())
        if read.get(tp, 0) < end
    ]


def _states(tracker: Tracker, started: Sequence[str]) -> tuple[Counter[str], list[str]]:
    """Return the started sagas' states as the tracker's traces say, and the unended ids."""
    states: Counter[str] = Counter()
    running: list[str] = []
    for cid in started:
        trace = tracker.get(cid)
        state = "never seen" if trace is None else str(trace.state)
        states[state] += 1
        if trace is not None and trace.state not in TERMINAL_STATES:
            running.append(f"{cid} {state}: " + ", ".join(e.event_type for e in trace.events))
    return states, running


def diagnose_missing(
    tracker: Tracker,
    transport: Transport,
    *,
    started: Sequence[str],
    prefix: str,
    order_store: Path,
    partitions: int,
) -> str:
    """Return a report on the started sagas ``tracker`` has not seen end.

    ``started`` are the correlation ids the test started, ``prefix`` the run's topic
    prefix and ``order_store`` the order service's SQLite file (where the start events'
    outbox rows are); each topic has ``partitions`` partitions. The report compares the
    tracker's counts with its traces, and for each saga it never saw says where its
    records are in the topics (read afresh) and whether its start event is still in the
    order outbox.
    """
    states, running = _states(tracker, started)
    lines = [
        f"tracker: {tracker.total()} saga(s) known, counts {dict(tracker.counts())}; "
        f"the {len(started)} started saga(s) by their traces: {dict(states)}"
    ]
    lines += [f"  not ended: {line}" for line in running[:_SHOWN]]
    missing = missing_sagas(tracker, started)
    topics = [t for t in transport.list_topics() if re.match(re.escape(prefix), t)]
    if missing:
        wanted = set(missing)
        log = _in_log(transport, topics, wanted)
        counts, held = _in_outbox(order_store, wanted)
        lines.append(
            f"{len(missing)} started saga(s) never seen by the tracker "
            f"({sum(1 for cid in missing if log[cid])} of them have records in the topics; "
            f"{len(held)} still in the order outbox; outbox rows per origin: {counts}):"
        )
        for cid in missing[:_SHOWN]:
            where = ", ".join(log[cid]) or "no record in any topic"
            lines.append(f"  {cid}: {where}; outbox: {held.get(cid, 'no row')}")
        if len(missing) > _SHOWN:
            lines.append(f"  ... and {len(missing) - _SHOWN} more")
    behind = _lag(transport, tracker, topics, partitions)
    lines.append("tracker behind the end of: " + (", ".join(behind) if behind else "no partition"))
    stats = tracker.stats
    lines.append(
        f"tracker stats: records={stats.records} events={stats.events} "
        f"duplicates={stats.duplicates} skipped={stats.skipped} invalid={stats.invalid} "
        f"ignored={stats.ignored}"
    )
    return "\n".join(lines)
