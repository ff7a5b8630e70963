"""Rich renderables of the tracker's answers: saga tables, counts, one saga's timeline.

Used by the ``choreo sagas``, ``trace``, ``watch`` and ``verify`` commands. Given the
terminal's ``width``, the tables fit it: a saga table keeps the correlation id (folded
onto more lines when it is longer than the room left, never cut) and the status, and adds
the other columns in order of use (start, duration, saga, last event, events) while they
fit; the counts and the violations fold into narrower layouts. Times are
shown in UTC with millisecond precision (a time outside years 1-9999 as ``invalid
time``); durations in the largest sensible unit. Every string from data (ids, types,
saga and service names, topics, payload fields, violation messages) goes through
:func:`choreo.safety.terminal.data`: plain ``Text`` with control and bidi characters
escaped, never markup.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from rich import box
from rich.console import Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from choreo.model.envelope import Role
from choreo.safety.terminal import console as safe_console
from choreo.safety.terminal import data
from choreo.safety.timestamps import format_ms
from choreo.tracker.model import DeadLetterNote, SagaStatus, SagaTrace, TraceEvent
from choreo.tracker.verify import Finding

__all__ = [
    "counts_table",
    "findings_table",
    "format_duration",
    "format_time",
    "records_text",
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
    Role.COMMAND: "magenta",
    Role.COMPENSATE: "yellow",
}


def format_time(ms: int | None) -> str:
    """Return epoch milliseconds as ``YYYY-MM-DD HH:MM:SS.mmm`` UTC ('-' for None).

    A value outside years 1-9999 is shown as ``invalid time (N ms)``.
    """
    return format_ms(ms)


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


def _fits(table: Table, width: int | None) -> bool:
    """Return True when ``table`` needs no more than ``width`` columns (always without one)."""
    if width is None:
        return True
    measuring = safe_console(file=io.StringIO(), width=max(width, 1) * 4)
    return Measurement.get(measuring, measuring.options, table).maximum <= width


def counts_table(
    counts: Mapping[SagaStatus, int], *, title: str | None = None, width: int | None = None
) -> Table:
    """Return how many sagas have each status and the total, fitting ``width`` columns.

    One row with every status when it fits; else one row of the statuses some saga has;
    else one line per status that some saga has.
    """
    total = str(sum(counts.values()))
    for statuses in (list(SagaStatus), [s for s in SagaStatus if counts.get(s, 0)]):
        table = Table(title=title, show_edge=False, pad_edge=False)
        for status in statuses:
            table.add_column(status_text(status), justify="right", no_wrap=True)
        table.add_column("Total", justify="right", style="bold", no_wrap=True)
        table.add_row(*(str(counts.get(s, 0)) for s in statuses), total)
        if _fits(table, width):
            return table
    table = Table(title=title, show_edge=False, pad_edge=False)
    table.add_column("Status", no_wrap=True)
    table.add_column("Sagas", justify="right", no_wrap=True)
    for status in SagaStatus:
        if counts.get(status, 0):
            table.add_row(status_text(status), str(counts[status]))
    table.add_row(Text("Total", style="bold"), total)
    return table


_SAGA_COLUMNS: Final = ("id", "saga", "status", "started", "duration", "events", "last")
"""The saga table's columns, in the order they are shown."""
_OPTIONAL: Final = ("started", "duration", "saga", "last", "events")
"""The columns beside id and status, most useful first: added while they fit."""


def _saga_cells(trace: SagaTrace) -> dict[str, RenderableType]:
    last = trace.events[-1].event_type if trace.events else "-"
    return {
        "id": data(trace.correlation_id),
        "saga": data(trace.saga or "?"),
        "status": status_text(trace.status),
        "started": format_time(trace.started_at_ms),
        "duration": format_duration(trace.duration_ms),
        "events": str(len(trace.events)),
        "last": data(last),
    }


def _saga_table(
    rows: Sequence[dict[str, RenderableType]], shown: Sequence[str], title: str | None
) -> Table:
    compact = len(shown) < len(_SAGA_COLUMNS)
    table = Table(
        title=title,
        show_lines=False,
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        pad_edge=not compact,
        show_edge=not compact,
    )
    headers = {
        "id": ("Correlation id", {"overflow": "fold"}),
        "saga": ("Saga", {"no_wrap": True}),
        "status": ("Status", {"no_wrap": True}),
        "started": ("Started (UTC)", {"no_wrap": True}),
        "duration": ("Duration", {"justify": "right", "no_wrap": True}),
        "events": ("Events", {"justify": "right", "no_wrap": True}),
        "last": ("Last event", {"no_wrap": True}),
    }
    for name in _SAGA_COLUMNS:
        if name in shown:
            header, options = headers[name]
            table.add_column(header, **options)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[name] for name in _SAGA_COLUMNS if name in shown))
    return table


def sagas_table(
    traces: Iterable[SagaTrace], *, title: str | None = None, width: int | None = None
) -> Table:
    """Return one row per saga: id, saga, status, start, duration, events, last event.

    With ``width`` (the terminal's columns) only the columns that fit are kept: the
    correlation id and the status always (a long id folds onto more lines), then start,
    duration, saga, last event and event count while the table stays within ``width``.
    """
    rows = [_saga_cells(trace) for trace in traces]
    full = _saga_table(rows, _SAGA_COLUMNS, title)
    if _fits(full, width):
        return full
    shown = ["id", "status"]
    for name in _OPTIONAL:
        if _fits(_saga_table(rows, [*shown, name], title), width):
            shown.append(name)
    return _saga_table(rows, shown, title)


def _event_label(
    event: TraceEvent, previous: TraceEvent | None, known: Mapping[str, TraceEvent]
) -> Text:
    label = Text()
    label.append(format_time(event.produced_at_ms), style="dim")
    delta = None if previous is None else event.produced_at_ms - previous.produced_at_ms
    label.append(f" {'+' + format_duration(delta) if delta is not None else '':>12} ", style="dim")
    style = ROLE_STYLE.get(event.role, "")
    label.append_text(data(event.event_type, style))
    label.append(f" [{event.role.value}]", style=style)
    if event.late:
        label.append(" LATE", style="bold red")
    label.append("  ")
    label.append_text(data(event.service or "?"))
    if event.step:
        label.append_text(data(f" ({event.step})", "dim"))
    label.append_text(data(f"  {event.topic}/{event.partition}@{event.offset}", "dim"))
    if event.causation_id is not None:
        cause = known.get(event.causation_id)
        named = cause.event_type if cause is not None else "not in the log"
        label.append_text(data(f"  <- {named} {event.causation_id[:8]}", "dim"))
    return label


def _trace_header(trace: SagaTrace) -> Text:
    """Return the first line of a saga's timeline: saga, id, status, size, duration."""
    header = Text()
    header.append_text(data(f"{trace.saga or '?'} ", "bold"))
    header.append_text(data(trace.correlation_id))
    header.append("  ")
    header.append_text(status_text(trace.status))
    if trace.state.value != trace.status.value:
        header.append(f" ({trace.state.value})", style="dim")
    header.append(f"  {len(trace.events)} events, {format_duration(trace.duration_ms)}")
    if trace.timed_out:
        header.append("  timed out", style="yellow")
    return header


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
    tree = Tree(_trace_header(trace))
    _add_events(tree, trace, payload)
    return Group(tree, *_trace_footer(trace, expecting))


def _add_events(
    tree: Tree,
    trace: SagaTrace,
    payload: Callable[[TraceEvent], dict[str, Any] | None] | None,
) -> None:
    """Add a node per event (its payload, violations and dead letters under it) to ``tree``;
    dead letters of events the saga does not hold come last."""
    known = {event.event_id: event for event in trace.events}
    by_event: dict[str | None, list[Text]] = {}
    for violation in trace.violations:
        text = data(f"[{violation.code}] {violation.message}", "bold red")
        by_event.setdefault(violation.event_id, []).append(text)
    letters: dict[str, list[DeadLetterNote]] = {}
    for note in trace.dead_letters:
        letters.setdefault(note.event_id, []).append(note)
    previous: TraceEvent | None = None
    for event in trace.events:
        node = tree.add(_event_label(event, previous, known))
        if payload is not None:
            fields = payload(event)
            for name, value in (fields or {}).items():
                node.add(data(f"{name} = {value!r}", "dim"))
        for message in by_event.pop(event.event_id, []):
            node.add(message)
        for note in letters.pop(event.event_id, []):
            node.add(_dead_letter_text(note))
        previous = event
    for notes in letters.values():  # dead letters of events the saga does not hold
        for note in notes:
            tree.add(data(f"{note.event_type or '?'} {note.event_id}", "red")).add(
                _dead_letter_text(note)
            )


def _trace_footer(trace: SagaTrace, expecting: Iterable[str]) -> list[RenderableType]:
    """Return the lines under a saga's tree: the next deadline, a failed compensation,
    the violations."""
    parts: list[RenderableType] = []
    if trace.deadline_ms is not None:
        waiting = ", ".join(expecting)
        due = f"next event{' (' + waiting + ')' if waiting else ''} due by "
        parts.append(data(f"{due}{format_time(trace.deadline_ms)} UTC", "dim"))
    if trace.compensation_failed:
        parts.append(Text("a compensation failed: a human is needed", style="bold red"))
    if trace.violations:
        parts.append(Text(f"{len(trace.violations)} violation(s):", style="bold red"))
        parts.extend(data(f"  [{v.code}] {v.message}", "red") for v in trace.violations)
    return parts


def records_text(stats: Any, *, read: int | None = None) -> Text:
    """Return how the records read were accounted for: events, duplicates, dead letters,
    records without choreo headers, and the unreadable ones per reason."""
    parts = [
        f"{read if read is not None else stats.records} records: {stats.events} events",
        f"{stats.duplicates} duplicates",
        f"{stats.dead_letters} dead letters",
        f"{stats.ignored} without choreo headers",
        f"{stats.invalid} unreadable",
    ]
    text = Text(", ".join(parts))
    if stats.reasons:
        text.append(" (", style="")
        reasons = sorted(stats.reasons.items(), key=lambda item: (-item[1], item[0]))
        shown = "; ".join(f"{reason}: {count}" for reason, count in reasons[:10])
        more = f"; {len(reasons) - 10} more reasons" if len(reasons) > 10 else ""
        text.append_text(data(shown + more, "yellow", max_chars=2000))
        text.append(")")
    return text


def _dead_letter_text(note: DeadLetterNote) -> Text:
    """Return one dead letter as a timeline line."""
    text = Text("dead-lettered", style="bold red")
    text.append_text(data(f" by {note.service or '?'}", "red"))
    if note.failed_at_ms is not None:
        text.append(f" at {format_time(note.failed_at_ms)}", style="dim")
    text.append_text(data(f": {note.message or note.reason}", "red", max_chars=300))
    if note.needs_human:
        text.append("  (a human is needed)", style="bold red")
    text.append_text(data(f"  {note.where}", "dim"))
    return text


def findings_table(findings: Iterable[Finding], *, width: int | None = None) -> Table:
    """Return a table of violations: saga, correlation id, code, explanation.

    When that does not fit ``width`` columns, two columns: the correlation id (with the
    saga under it) and the code followed by the explanation, both folded.
    """
    found = list(findings)
    table = Table(title="Saga-guarantee violations", show_lines=True)
    table.add_column("Saga")
    table.add_column("Correlation id", no_wrap=True, overflow="fold")
    table.add_column("Code", style="bold red", no_wrap=True)
    table.add_column("What happened", overflow="fold")
    for finding in found:
        table.add_row(
            data(finding.saga or "?"),
            data(finding.correlation_id),
            data(finding.violation.code),
            data(finding.violation.message),
        )
    if _fits(table, width) or width is None:
        return table
    narrow = Table(title="Saga-guarantee violations", show_lines=True, box=box.SIMPLE_HEAD)
    narrow.add_column("Correlation id (saga)", overflow="fold", ratio=2)
    narrow.add_column("What happened", overflow="fold", ratio=3)
    for finding in found:
        who = data(finding.correlation_id)
        who.append("\n")
        who.append_text(data(f"({finding.saga or '?'})", "dim"))
        what = data(finding.violation.code, "bold red")
        what.append_text(data(f": {finding.violation.message}"))
        narrow.add_row(who, what)
    return narrow
