"""``choreo sagas | trace | watch | verify``: reading sagas from the tracker on the command line.

The record source and the options these commands share are in
:mod:`choreo.cli._tracker_source`; ``choreo export | import`` are in
:mod:`choreo.cli.export_cmd`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from choreo.cli._listing import (
    echo_json,
    json_option,
    key_index,
    key_options,
    key_query,
    sagas_document,
    verify_document,
)
from choreo.cli._observability import metrics_port_option, serve_tracker_metrics
from choreo.cli._tracker_source import (
    Source,
    TrackerOptions,
    _console,
    _errors,
    _load,
    parse_time,
    source_options,
    tracker_options,
)
from choreo.cli.export_cmd import export, import_
from choreo.safety.text import printable
from choreo.tracker.model import SagaStatus

__all__ = ["export", "import_", "parse_time", "sagas", "trace", "verify", "watch"]

# --- commands --------------------------------------------------------------------------


_TIME_HELP = (
    "TIME is a duration ago (30s, 15m, 2h, 7d), an ISO 8601 time (2026-12-03T10:00Z;"
    " no zone means UTC) or epoch milliseconds."
)


@click.command("sagas")
@source_options
@tracker_options
@click.option(
    "--status",
    "--state",
    "status_name",
    type=click.Choice([s.value for s in SagaStatus], case_sensitive=False),
    metavar="STATUS",
    help="Only sagas with this status (any case): "
    + ", ".join(s.value for s in SagaStatus)
    + ". --state is the older name.",
)
@click.option("--saga", "saga_type", metavar="TYPE", help="Only sagas of this type (name).")
@click.option("--since", metavar="TIME", help=f"Only sagas started at or after TIME. {_TIME_HELP}")
@click.option("--until", metavar="TIME", help="Only sagas started at or before TIME.")
@click.option("--stuck", is_flag=True, help="Only stuck sagas.")
@click.option("--search", metavar="TEXT", help="Only correlation ids containing TEXT.")
@key_options
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show at most this many sagas.",
)
@json_option()
@_errors
def sagas(
    *,
    source: Source,
    options: TrackerOptions,
    status_name: str | None,
    saga_type: str | None,
    since: str | None,
    until: str | None,
    stuck: bool,
    search: str | None,
    where: tuple[str, ...],
    find: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List sagas (newest first) with their statuses, and how many have each status.

    Filter by status (--status failed), start time (--since 1h, --until 2026-12-03T10:00Z),
    correlation id (--search) and business key (--where order_id=123, --find VALUE).
    """
    from choreo.tracker.render import counts_table, records_text, sagas_table

    for text in (since, until, options.now_text):  # refuse a bad time before reading
        if text:
            parse_time(text, now_ms=int(time.time() * 1000))
    tracker = options.build()
    query = key_query(where, find)
    keys = key_index(query, tracker, has_schemas=options.schemas_dir is not None)
    now = _load(source, tracker, options.now_text, keys)
    status = None
    if status_name is not None:
        status = next(s for s in SagaStatus if s.value.lower() == status_name.lower())
    filters = {
        "status": status,
        "saga": saga_type,
        "since_ms": parse_time(since, now_ms=now) if since else None,
        "until_ms": parse_time(until, now_ms=now) if until else None,
        "stuck_only": stuck,
        "search": search,
    }
    matching = tracker.sagas(**filters, limit=tracker.total())
    if keys is not None:
        wanted = keys.matching(query)
        matching = [trace for trace in matching if trace.correlation_id in wanted]
    shown = matching[:limit]
    if as_json:
        echo_json(
            sagas_document(
                shown, matching=len(matching), tracker=tracker, read=source.count, keys=keys,
                query=query,
            )
        )
        return
    console = _console()
    width = console.width
    console.print(sagas_table(shown, title=f"{len(matching)} saga(s), newest first", width=width))
    if len(matching) > len(shown):
        console.print(f"... {len(matching) - len(shown)} more (raise --limit)")
    console.print(counts_table(tracker.counts(), title="All sagas by status", width=width))
    console.print(
        f"{tracker.total()} sagas, {tracker.stats.events} events from {source.count} records"
    )
    console.print(records_text(tracker.stats, read=source.count))


@click.command("trace")
@click.argument("correlation_id")
@source_options
@tracker_options
@json_option()
@_errors
def trace(*, correlation_id: str, source: Source, options: TrackerOptions, as_json: bool) -> None:
    """Show one saga's timeline (CORRELATION_ID, or a unique part of it) as a tree."""
    from choreo.tracker.render import trace_tree

    tracker = options.build(keep_finished=10**9)
    _load(source, tracker, options.now_text)
    found = tracker.get(correlation_id)
    if found is None:
        candidates = tracker.sagas(search=correlation_id, limit=6)
        if not candidates:
            raise click.ClickException(
                f"no saga with correlation id {printable(correlation_id)!r}: "
                "run `choreo sagas` with the same source to list the ids it holds"
            )
        if len(candidates) > 1:
            names = ", ".join(printable(t.correlation_id, 80) for t in candidates[:5])
            raise click.ClickException(
                f"{printable(correlation_id)!r} matches several sagas: {names}; "
                "give more of the id"
            )
        found = candidates[0]
    payload = None
    if options.schemas_dir is not None:
        cid = found.correlation_id

        def payload(event: Any) -> dict[str, Any] | None:
            return tracker.payload(cid, event.event_id)  # type: ignore[no-any-return]

    expecting: tuple[str, ...] = ()
    active = [e for e in found.events if e.role.value != "notice"]
    if tracker.facts is not None and active and not found.state.is_terminal:
        expecting = tracker.facts.expected_after(active[-1].event_type)
    if as_json:
        from choreo.viewer.api import saga_detail

        document = saga_detail(found)
        document["expecting"] = list(expecting)
        if payload is not None:
            for event, view in zip(found.events, document["events"], strict=True):
                view["payload"] = payload(event)
        echo_json(document)
        return
    _console().print(trace_tree(found, payload=payload, expecting=expecting))


@click.command("watch")
@source_options
@tracker_options
@click.option(
    "--latest",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="How many of the newest sagas to show.",
)
@click.option("--once", is_flag=True, help="Show one frame (after reading what is there) and exit.")
@json_option()
@click.option("--duration", type=click.FloatRange(min=0), help="Exit after this many seconds.")
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.05),
    default=0.5,
    show_default=True,
    help="Seconds between redraws.",
)
@metrics_port_option("the saga metrics (sagas per status, stuck sagas, durations)")
@_errors
def watch(
    *,
    source: Source,
    options: TrackerOptions,
    latest: int,
    once: bool,
    duration: float | None,
    refresh: float,
    metrics_address: tuple[str, int] | None,
    as_json: bool,
) -> None:
    """Show live saga counts and the newest sagas, updating in place (Ctrl-C to stop).

    With a cluster it follows the topics; with --file it shows the file's final state.
    With --json it reads what is there and prints one snapshot (as --once does).
    """
    from rich.live import Live

    tracker = options.build()
    if metrics_address is not None:
        click.get_current_context().call_on_close(
            serve_tracker_metrics(tracker, metrics_address).stop
        )
    console = _console()
    if source.file is not None or once or as_json:
        _load(source, tracker, options.now_text)
        if as_json:
            newest = tracker.sagas(limit=latest)
            echo_json(
                sagas_document(newest, matching=tracker.total(), tracker=tracker,
                               read=source.count)
            )
            return
        console.print(_watch_view(tracker, latest, console.width))
        return
    from choreo.tracker.live import LiveTracker

    pattern = "^[^_].*"  # not Kafka's internal __ topics; new topics are picked up
    topics = source.topics_regex
    if topics:
        pattern = topics if topics.startswith("^") else f"^.*({topics})"
    live_tracker = LiveTracker(
        tracker, source.transport, topics_pattern=pattern, poll_timeout=min(refresh, 0.5),
        topics=[source.summaries] if source.summaries else None,
        materialized=source.summaries is not None,
    )
    started = time.monotonic()
    live_tracker.start()
    try:
        with Live(_watch_view(tracker, latest, console.width), console=console,
                  auto_refresh=False) as live:
            version = -1
            while duration is None or time.monotonic() - started < duration:
                current = tracker.wait_for_change(version, refresh)
                if current != version:
                    version = current
                    live.update(_watch_view(tracker, latest, console.width), refresh=True)
                if live_tracker.error is not None:
                    raise click.ClickException(f"reading stopped: {live_tracker.error}")
            live.update(_watch_view(tracker, latest, console.width), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        live_tracker.stop()
        source.close()


def _watch_view(tracker: Any, latest: int, width: int) -> Any:
    """Return the watch screen: counts by status and the newest sagas, ``width`` wide."""
    from rich.console import Group

    from choreo.tracker.render import counts_table, records_text, sagas_table

    return Group(
        counts_table(tracker.counts(), title=f"{tracker.total()} sagas", width=width),
        sagas_table(tracker.sagas(limit=latest), title=f"newest {latest}", width=width),
        records_text(tracker.stats),
    )


@click.command("verify")
@source_options
@tracker_options
@json_option()
@_errors
def verify(*, source: Source, options: TrackerOptions, as_json: bool) -> None:
    """Check the saga guarantee over the whole log; exit 1 explaining each violation."""
    from choreo.tracker.render import findings_table, records_text
    from choreo.tracker.verify import verify_tracker

    tracker = options.build()
    _load(source, tracker, options.now_text)
    report = verify_tracker(tracker)
    if as_json:
        echo_json(verify_document(report, tracker, read=source.count))
        if not report.ok:
            sys.exit(1)
        return
    console = _console()
    if report.compensation_failed:
        needing = ", ".join(printable(cid, 80) for cid in report.compensation_failed[:10])
        console.print(
            f"note: {len(report.compensation_failed)} saga(s) need a human "
            f"(a compensation failed): {needing}"
        )
    if report.stuck:
        console.print(f"note: {len(report.stuck)} saga(s) are stuck")
    console.print(records_text(tracker.stats, read=source.count))
    if report.ok:
        console.print(report.summary())
        return
    console.print(findings_table(report.findings, width=console.width))
    console.print(report.summary())
    sys.exit(1)
