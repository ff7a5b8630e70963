"""Read a scenario's whole log back (read_committed) and ask ``choreo verify`` about it.

:func:`read_log` folds every record of the scenario's topics into a fresh tracker (the
final word on each saga's state), counts records whose event id appeared before (in
exactly-once mode there must be none: an aborted transaction is invisible to a
read_committed reader, a committed duplicate is not) and counts dead letters.
:func:`run_verify` runs the real ``choreo verify`` over the same topics.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from choreo.model.envelope import Header
from choreo.tracker import Tracker
from choreo.tracker.live import read_topics
from choreo.transports.factory import open_transport

from .checks import SagaView
from .fleet import console_script

_VIOLATIONS = re.compile(r"(\d+) violation\(s\)")


@dataclass(slots=True)
class LogFacts:
    """What the read_committed log holds: every saga's view and the duplicate records."""

    sagas: dict[str, SagaView] = field(default_factory=dict)
    records: int = 0
    duplicate_records: int = 0
    dead_letters: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    front_end_duplicates: int = 0
    """Copies in the front end's topics (at-least-once by design: same event id, dropped)."""
    front_end_examples: list[str] = field(default_factory=list)


def read_log(
    bootstrap: str,
    prefix: str,
    tracker: Tracker,
    ids: Iterable[str],
    *,
    idle: float = 3.0,
    front_end: frozenset[str] = frozenset(),
) -> LogFacts:
    """Read every topic named ``prefix*`` into ``tracker``; view the sagas of ``ids``.

    Duplicates in the ``front_end`` topics (what the order placer, a front end publishing
    through the order service's outbox, writes: at-least-once, so a copy keeps its event
    id and every inbox drops it) are counted apart from the services' duplicates.
    """
    transport: Any = open_transport("confluent", bootstrap=bootstrap)
    facts = LogFacts()
    seen: Counter[str] = Counter()
    front: Counter[str] = Counter()
    try:
        topics = [t for t in transport.list_topics() if t.startswith(prefix)]
        for record in read_topics(transport, topics, idle_timeout=idle):
            facts.records += 1
            headers = dict(record.headers)
            if ".deadletter." in record.topic or "choreo.deadletter" in record.topic:
                facts.dead_letters += 1
                continue
            raw_id = headers.get(Header.EVENT_ID)
            if raw_id is not None:
                event_id = raw_id.decode(errors="replace")
                counts, examples = (
                    (front, facts.front_end_examples)
                    if record.topic in front_end
                    else (seen, facts.duplicate_examples)
                )
                counts[event_id] += 1
                if counts[event_id] == 2 and len(examples) < 10:
                    examples.append(
                        f"{record.topic}[{record.partition}]@{record.offset} id {event_id}"
                    )
            tracker.feed(record)
    finally:
        close = getattr(transport, "close", None)
        if callable(close):
            close()
    facts.duplicate_records = sum(n - 1 for n in seen.values() if n > 1)
    facts.front_end_duplicates = sum(n - 1 for n in front.values() if n > 1)
    for correlation_id in ids:
        trace = tracker.get(correlation_id)
        if trace is not None:
            events = frozenset(e.event_type.rsplit(".", 1)[-1] for e in trace.events)
            facts.sagas[correlation_id] = SagaView(str(trace.status), events)
    return facts


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``choreo verify``'s exit code, its violation count and its output's tail."""

    code: int
    findings: int
    tail: str


def run_verify(bootstrap: str, prefix: str, schemas: Path, cwd: Path) -> VerifyResult:
    """Run ``choreo verify`` over the ``prefix*`` topics; count the violations it reports."""
    result = subprocess.run(
        [
            console_script(),
            "verify",
            "--bootstrap",
            bootstrap,
            "--topics",
            f"^{re.escape(prefix)}.*",
            "--graph",
            "services",
            "--schemas",
            str(schemas),
            "--idle",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )
    output = result.stdout + result.stderr
    match = _VIOLATIONS.search(output)
    findings = int(match.group(1)) if match else (0 if result.returncode == 0 else 1)
    return VerifyResult(result.returncode, findings, output[-3000:])
