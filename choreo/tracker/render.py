"""Rich renderables of the tracker's answers: saga tables, counts, one saga's timeline.

Used by the ``choreo sagas``, ``trace``, ``watch`` and ``verify`` commands. Times are
shown in UTC with millisecond precision; durations in the largest sensible unit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from choreo.model.envelope import Role
from choreo.tracker.model import SagaStatus, SagaTrace, TraceEvent
from choreo.tracker.verify import Finding

__all__ = [
    "counts_table",
    "findings_table",
    "format_duration",
    "format_time",
    "sagas_table",
    "status_text",
    "trace_tree",
]

STATUS_STYLE: Final = {
    SagaStatus.STARTED: "cyan",
    SagaStatus.PENDING: "blue",
    SagaStatus.COMPENSATING: "yellow",
    SagaStatus.COMPLETED: "green",
    SagaStatus.FAILED: "magenta",
    SagaStatus.STUCK: "bold yellow",
    SagaStatus.COMPENSATION_FAILED: "bold red",
    SagaStatus.VIOLATED: "bold red",
}

ROLE_STYLE: Final = {
    Role.START: "cyan",
    Role.STEP: "blue",
    Role.FAILURE: "red",
    Role.COMPENSATION: "bold yellow",
    Role.COMPLETED: "bold green",
    Role.FAILED: "bold magenta",
    Role.NOTICE: "dim",
}


def format_time(ms: int | None) -> str:
    """Return epoch milliseconds as ``YYYY-MM-DD HH:MM:SS.mmm`` UTC ('-' for None)."""
    if ms is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def format_duration(ms: int | None) -> str:
    """Return a duration in ms as e.g. ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if ms is None:
        return "-"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms < 1_000:
        return f"{sign}{ms} ms"
    if ms < 60_000:
        return f"{sign}{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{sign}{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours} h {minutes:02d} min"


def status_text(status: SagaStatus) -> Text:
    """Return a saga status, coloured."""
    return Text(status.value, style=STATUS_STYLE.get(status, ""))


def counts_table(counts: Mapping[SagaStatus, int], *, title: str | None = None) -> Table:
    """Return a one-row table of how many sagas have each status, and the total."""
    table = Table(title=title, show_edge=False, pad_edge=False)
    for status in SagaStatus:
        table.add_column(status_text(status), justify="right")
    table.add_column("Total", justify="right", style="bold")
    table.add_row(*(str(counts.get(s, 0)) for s in SagaStatus), str(sum(counts.values())))
    return table


def sagas_table(traces: Iterable[SagaTrace], *, title: str | None = None) -> Table:
    """Return a table with one row per saga: id, saga, status, start, duration, last event."""
    table = Table(title=title, show_lines=False)
    table.add_column("Correlation id", no_wrap=True, overflow="fold")
    table.add_column("Saga")
    table.add_column("Status")
    table.add_column("Started (UTC)", no_wrap=True)
    table.add_column("Duration", justify="right")
    table.add_column("Events", justify="right")
    table.add_column("Last event", overflow="fold")
    for trace in traces:
        last = trace.events[-1].event_type if trace.events else "-"
        table.add_row(
            trace.correlation_id,
            trace.saga or "?",
            status_text(trace.status),
            format_time(trace.started_at_ms),
            format_duration(trace.duration_ms),
            str(len(trace.events)),
            last,
        )
    return table


def _event_label(
    event: TraceEvent, previous: TraceEvent | None, known: Mapping[str, TraceEvent]
) -> Text:
    label = Text()
    label.append(format_time(event.produced_at_ms), style="dim")
    delta = None if previous is None else event.produced_at_ms - previous.produced_at_ms
    label.append(f" {'+' + format_duration(delta) if delta is not None else '':>12} ", style="dim")
    label.append(event.event_type, style=ROLE_STYLE.get(event.role, ""))
    label.append(f" [{event.role.value}]", style=ROLE_STYLE.get(event.role, ""))
    if event.late:
        label.append(" LATE", style="bold red")
    label.append(f"  {event.service or '?'}")
    if event.step:
        label.append(f" ({event.step})", style="dim")
    label.append(f"  {event.topic}/{event.partition}@{event.offset}", style="dim")
    if event.causation_id is not None:
        cause = known.get(event.causation_id)
        named = cause.event_type if cause is not None else "not in the log"
        label.append(f"  <- {named} {event.causation_id[:8]}", style="dim")
    return label


def trace_tree(
    trace: SagaTrace,
    *,
    payload: Callable[[TraceEvent], dict[str, Any] | None] | None = None,
    expecting: Iterable[str] = (),
) -> RenderableType:
    """Return one saga's timeline: a tree of its events in causal order, then its violations.

    Each node shows the time, the time since the previous event, the type and role, the
    service and step, where it was read from, and its cause; compensations and failures
    are highlighted, late events flagged, the violations hang under their events.
    ``expecting`` names the event types that may come next (from the choreography).
    """
    header = Text()
    header.append(f"{trace.saga or '?'} ", style="bold")
    header.append(trace.correlation_id)
    header.append("  ")
    header.append_text(status_text(trace.status))
    if trace.state.value != trace.status.value:
        header.append(f" ({trace.state.value})", style="dim")
    header.append(f"  {len(trace.events)} events, {format_duration(trace.duration_ms)}")
    if trace.timed_out:
        header.append("  timed out", style="yellow")
    tree = Tree(header)
    known = {event.event_id: event for event in trace.events}
    by_event: dict[str | None, list[str]] = {}
    for violation in trace.violations:
        text = f"[{violation.code}] {violation.message}"
        by_event.setdefault(violation.event_id, []).append(text)
    previous: TraceEvent | None = None
    for event in trace.events:
        node = tree.add(_event_label(event, previous, known))
        if payload is not None:
            fields = payload(event)
            for name, value in (fields or {}).items():
                node.add(Text(f"{name} = {value!r}", style="dim"))
        for message in by_event.pop(event.event_id, []):
            node.add(Text(message, style="bold red"))
        previous = event
    parts: list[RenderableType] = [tree]
    if trace.deadline_ms is not None:
        waiting = ", ".join(expecting)
        due = f"next event{' (' + waiting + ')' if waiting else ''} due by "
        parts.append(Text(f"{due}{format_time(trace.deadline_ms)} UTC", style="dim"))
    if trace.compensation_failed:
        parts.append(Text("a compensation failed: a human is needed", style="bold red"))
    if trace.violations:
        parts.append(Text(f"{len(trace.violations)} violation(s):", style="bold red"))
        parts.extend(
            Text(f"  [{v.code}] {v.message}", style="red") for v in trace.violations
        )
    return Group(*parts)


def findings_table(findings: Iterable[Finding]) -> Table:
    """Return a table of violations: saga, correlation id, code, explanation."""
    table = Table(title="Saga-guarantee violations", show_lines=True)
    table.add_column("Saga")
    table.add_column("Correlation id", no_wrap=True, overflow="fold")
    table.add_column("Code", style="bold red", no_wrap=True)
    table.add_column("What happened", overflow="fold")
    for finding in findings:
        table.add_row(
            finding.saga or "?",
            finding.correlation_id,
            finding.violation.code,
            finding.violation.message,
        )
    return table
