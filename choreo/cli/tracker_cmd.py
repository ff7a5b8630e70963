"""``choreo sagas | trace | watch | verify | export | import``: the tracker on the command line.

Every reading command takes its records from one source:

- ``--file PATH``: an Avro object container file written by ``choreo export`` (no broker);
- ``--bootstrap HOST:PORT`` (with ``--transport confluent|kafka-python``): the topics of a
  cluster, read from the beginning until nothing new arrives for ``--idle`` seconds.

``--topics REGEX`` picks topics (default: every topic except Kafka's internal ``__``
ones); ``--schemas DIR`` decodes payloads; ``--graph MODULE`` (or ``module:attribute``)
adds the declared choreography (per-step deadlines, compensatable steps). A program that
embeds the CLI (or a test) may pass a ready transport as ``obj={"transport": t}`` to
click; it is used when neither ``--file`` nor ``--bootstrap`` is given.

"Stuck" needs a notion of now: against a cluster it is the wall clock, on a file it is the
newest record's timestamp (the moment of the export) unless ``--now`` says otherwise.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from choreo.cli._common import (
    close_transport,
    configured_bootstrap,
    kafka_options,
    new_tracker,
    open_kafka,
    registry_option,
)
from choreo.cli._observability import metrics_port_option, serve_tracker_metrics
from choreo.errors import ChoreoError
from choreo.safety.text import printable
from choreo.tracker.model import SagaStatus

__all__ = ["export", "import_", "parse_time", "sagas", "trace", "verify", "watch"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Command = Callable[..., Any]

_RELATIVE: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)$")
_UNIT_MS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, *, now_ms: int) -> int:
    """Return epoch ms for ``text``: epoch ms digits, ISO 8601 (naive = UTC), or ``15m`` ago.

    Relative units: ms, s, m/min, h, d. Raises ``click.BadParameter`` otherwise.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    relative = _RELATIVE.match(text)
    if relative:
        return now_ms - int(float(relative.group(1)) * _UNIT_MS[relative.group(2)])
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use epoch ms, ISO 8601 or a duration ago like 15m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


# --- common options --------------------------------------------------------------------


def _with_options(func: Command, options: Sequence[Callable[[Command], Command]]) -> Command:
    """Return ``func`` with click ``options`` added, listed in the given order."""
    for option in reversed(options):
        func = option(func)
    return func


def _grouped(
    func: Command, keyword: str, factory: Callable[..., Any], params: Sequence[str]
) -> Command:
    """Return ``func`` taking ``params`` and getting them as one ``keyword=factory(**params)``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        group = {name: kwargs.pop(name) for name in params}
        return func(*args, **{keyword: factory(**group)}, **kwargs)

    return wrapper


def source_options(func: Command) -> Command:
    """Add the options that say where records come from; the command gets one ``source``.

    The command is called with ``source=`` a :class:`Source` built from ``--file``,
    ``--bootstrap``, ``--transport``, ``--topics`` and ``--idle``.
    """
    options = [
        click.option(
            "--file",
            "file_",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Read an Avro container file written by `choreo export` (no broker).",
        ),
        kafka_options("Read a Kafka cluster."),
        click.option(
            "--topics",
            metavar="REGEX",
            help="Topics to read (a regular expression); default: all but internal __ topics.",
        ),
        click.option(
            "--idle",
            type=click.FloatRange(min=0.1),
            default=3.0,
            show_default=True,
            help="With a cluster: stop reading after this many seconds without new records.",
        ),
    ]
    params = ("file_", "bootstrap", "transport_kind", "topics", "idle")
    return _with_options(_grouped(func, "source", Source, params), options)


@dataclass(frozen=True, slots=True)
class TrackerOptions:
    """The tracker options of a reading command: decoding, the choreography, deadlines, 'now'."""

    schemas_dir: Path | None
    graph: str | None
    deadline: float
    now_text: str | None

    def build(self, keep_finished: int = 1_000) -> Any:
        """Return an empty Tracker configured by these options."""
        return new_tracker(
            schemas_dir=self.schemas_dir,
            choreography=self.graph,
            deadline_s=self.deadline,
            keep_finished=keep_finished,
        )


def tracker_options(func: Command) -> Command:
    """Add the options that configure the tracker; the command gets one ``options``.

    The command is called with ``options=`` :class:`TrackerOptions` built from
    ``--schemas``, ``--graph``, ``--deadline`` and ``--now``.
    """
    options = [
        click.option(
            "--schemas",
            "schemas_dir",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Directory of .avsc schemas, to decode payloads.",
        ),
        click.option(
            "--graph",
            metavar="MODULE",
            help="Module (or module:attribute) declaring the services: the choreography.",
        ),
        click.option(
            "--deadline",
            type=click.FloatRange(min=0.001),
            default=30.0,
            show_default=True,
            help="Seconds a saga may wait for its next event when none is declared.",
        ),
        click.option(
            "--now",
            "now_text",
            metavar="TIME",
            help="When 'stuck' is judged (default: newest record's time with --file, else now).",
        ),
    ]
    options.append(registry_option())
    params = ("schemas_dir", "graph", "deadline", "now_text")
    return _with_options(_grouped(func, "options", TrackerOptions, params), options)


def _errors(func: F) -> F:
    """Turn choreo's errors into clean click errors (exit 2 for usage, 1 otherwise)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ChoreoError as exc:
            raise click.ClickException(str(exc)) from exc
        except re.error as exc:
            raise click.BadParameter(f"invalid --topics expression: {exc}") from exc

    return wrapper  # type: ignore[return-value]


# --- sources ---------------------------------------------------------------------------


class Source:
    """Where a command's records come from, with a progress display on stderr."""

    def __init__(
        self,
        *,
        file_: Path | None,
        bootstrap: str | None,
        transport_kind: str,
        topics: str | None,
        idle: float,
    ) -> None:
        ctx = click.get_current_context()
        embedded = ctx.obj.get("transport") if isinstance(ctx.obj, dict) else None
        if file_ is not None and bootstrap is not None:
            raise click.UsageError("give --file or --bootstrap, not both")
        if file_ is None and bootstrap is None and embedded is None:
            bootstrap = configured_bootstrap()
            if bootstrap is None:
                raise click.UsageError(
                    "give --file PATH, or --bootstrap HOST:PORT (or bootstrap.servers in the"
                    " --config file)"
                )
        self.file = file_
        self.bootstrap = bootstrap
        self.transport_kind = transport_kind
        self.topics_regex = topics
        """The --topics expression as given (None for all but internal topics)."""
        try:
            self.pattern = re.compile(topics) if topics else None
        except re.error as exc:
            raise click.BadParameter(f"invalid --topics expression: {exc}") from exc
        self.idle = idle
        self._embedded = embedded
        self._transport: Any = None
        self.newest_ms = -1
        """The newest record timestamp read (the moment of an export)."""
        self.count = 0

    @property
    def transport(self) -> Any:
        """Return the transport (opened on first use); None for a file."""
        if self._transport is None and self.file is None:
            if self.bootstrap is None:
                self._transport = self._embedded
            else:
                self._transport = open_kafka(self.transport_kind, self.bootstrap)
        return self._transport

    def wanted(self, topic: str) -> bool:
        """Return whether ``topic`` is selected by --topics (and is not internal)."""
        if topic.startswith("__"):
            return False
        return self.pattern is None or self.pattern.search(topic) is not None

    def topics(self) -> list[str]:
        """Return the cluster's selected topics, sorted."""
        return sorted(t for t in self.transport.list_topics() if self.wanted(t))

    def records(self) -> Iterator[Any]:
        """Yield the selected records, showing progress on stderr when it is a terminal."""
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        from choreo.safety.terminal import console as safe_console

        console = safe_console(stderr=True)
        if self.file is not None:
            from choreo.tracker.sources import ContainerReader

            progress = Progress(
                TextColumn("reading {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[records]} records"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=not console.is_terminal,
            )
            task = progress.add_task(self.file.name, total=self.file.stat().st_size, records=0)

            def advance(done: int) -> None:
                progress.update(task, completed=done, records=self.count)

            reader = ContainerReader(self.file, on_progress=advance)
            with progress:
                for record in reader:
                    if self.pattern is not None and not self.wanted(record.topic):
                        continue
                    yield self._seen(record)
            return
        from choreo.tracker.live import read_topics

        topics = self.topics()
        progress = Progress(
            SpinnerColumn(),
            TextColumn("reading {task.fields[topics]} topics: {task.completed} records"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        task = progress.add_task("read", total=None, topics=len(topics))
        with progress:
            for record in read_topics(self.transport, topics, idle_timeout=self.idle):
                progress.advance(task)
                yield self._seen(record)

    def _seen(self, record: Any) -> Any:
        self.count += 1
        self.newest_ms = max(self.newest_ms, record.timestamp_ms)
        return record

    def now_ms(self, now_text: str | None) -> int:
        """Return the moment to judge 'stuck' at: --now, the export's time, or the clock."""
        clock = int(time.time() * 1000)
        if now_text is not None:
            return parse_time(now_text, now_ms=clock)
        if self.file is not None and self.newest_ms >= 0:
            return self.newest_ms
        return clock

    def close(self) -> None:
        """Close a transport this source opened."""
        if self._transport is not None and self._transport is not self._embedded:
            close_transport(self._transport)


def _load(source: Source, tracker: Any, now_text: str | None) -> int:
    """Feed every record of ``source`` to ``tracker``, judge deadlines; return 'now'."""
    try:
        tracker.feed_many(source.records())
    finally:
        source.close()
    now = source.now_ms(now_text)
    tracker.check_deadlines(now)
    return now


def _console() -> Any:
    from choreo.safety.terminal import console

    return console()


# --- commands --------------------------------------------------------------------------


@click.command("sagas")
@source_options
@tracker_options
@click.option(
    "--status",
    "--state",
    "status_name",
    type=click.Choice([s.value for s in SagaStatus], case_sensitive=False),
    help="Only sagas with this status (--state is the older name).",
)
@click.option("--saga", "saga_type", metavar="TYPE", help="Only sagas of this type (name).")
@click.option("--since", metavar="TIME", help="Only sagas started at or after TIME.")
@click.option("--until", metavar="TIME", help="Only sagas started at or before TIME.")
@click.option("--stuck", is_flag=True, help="Only stuck sagas.")
@click.option("--search", metavar="TEXT", help="Only correlation ids containing TEXT.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
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
    limit: int,
) -> None:
    """List sagas (newest first) with their statuses, and how many have each status."""
    from choreo.tracker.render import counts_table, records_text, sagas_table

    tracker = options.build()
    now = _load(source, tracker, options.now_text)
    status = None
    if status_name is not None:
        status = next(s for s in SagaStatus if s.value.lower() == status_name.lower())
    since_ms = parse_time(since, now_ms=now) if since else None
    until_ms = parse_time(until, now_ms=now) if until else None
    filters = {
        "status": status,
        "saga": saga_type,
        "since_ms": since_ms,
        "until_ms": until_ms,
        "stuck_only": stuck,
        "search": search,
    }
    matching = tracker.sagas(**filters, limit=tracker.total())
    console = _console()
    shown = matching[:limit]
    console.print(sagas_table(shown, title=f"{len(matching)} saga(s), newest first"))
    if len(matching) > len(shown):
        console.print(f"... {len(matching) - len(shown)} more (raise --limit)")
    console.print(counts_table(tracker.counts(), title="All sagas by status"))
    console.print(
        f"{tracker.total()} sagas, {tracker.stats.events} events from {source.count} records"
    )
    console.print(records_text(tracker.stats, read=source.count))


@click.command("trace")
@click.argument("correlation_id")
@source_options
@tracker_options
@_errors
def trace(*, correlation_id: str, source: Source, options: TrackerOptions) -> None:
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
) -> None:
    """Show live saga counts and the newest sagas, updating in place (Ctrl-C to stop).

    With a cluster it follows the topics; with --file it shows the file's final state.
    """
    from rich.live import Live

    tracker = options.build()
    if metrics_address is not None:
        click.get_current_context().call_on_close(
            serve_tracker_metrics(tracker, metrics_address).stop
        )
    console = _console()
    if source.file is not None or once:
        _load(source, tracker, options.now_text)
        console.print(_watch_view(tracker, latest))
        return
    from choreo.tracker.live import LiveTracker

    pattern = "^[^_].*"  # not Kafka's internal __ topics; new topics are picked up
    topics = source.topics_regex
    if topics:
        pattern = topics if topics.startswith("^") else f"^.*({topics})"
    live_tracker = LiveTracker(
        tracker, source.transport, topics_pattern=pattern, poll_timeout=min(refresh, 0.5)
    )
    started = time.monotonic()
    live_tracker.start()
    try:
        with Live(_watch_view(tracker, latest), console=console, auto_refresh=False) as live:
            version = -1
            while duration is None or time.monotonic() - started < duration:
                current = tracker.wait_for_change(version, refresh)
                if current != version:
                    version = current
                    live.update(_watch_view(tracker, latest), refresh=True)
                if live_tracker.error is not None:
                    raise click.ClickException(f"reading stopped: {live_tracker.error}")
            live.update(_watch_view(tracker, latest), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        live_tracker.stop()
        source.close()


def _watch_view(tracker: Any, latest: int) -> Any:
    """Return the watch screen: counts by status and the newest sagas."""
    from rich.console import Group

    from choreo.tracker.render import counts_table, records_text, sagas_table

    return Group(
        counts_table(tracker.counts(), title=f"{tracker.total()} sagas"),
        sagas_table(tracker.sagas(limit=latest), title=f"newest {latest}"),
        records_text(tracker.stats),
    )


@click.command("verify")
@source_options
@tracker_options
@_errors
def verify(*, source: Source, options: TrackerOptions) -> None:
    """Check the saga guarantee over the whole log; exit 1 explaining each violation."""
    from choreo.tracker.render import findings_table, records_text
    from choreo.tracker.verify import verify_tracker

    tracker = options.build()
    _load(source, tracker, options.now_text)
    report = verify_tracker(tracker)
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
    console.print(findings_table(report.findings))
    console.print(report.summary())
    sys.exit(1)


@click.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The Avro container file to write.",
)
@kafka_options("The Kafka cluster to read.")
@click.option(
    "--topics",
    metavar="REGEX",
    help="Topics to export (a regular expression); default: all but internal __ topics.",
)
@click.option(
    "--idle",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Stop reading after this many seconds without new records.",
)
@_errors
def export(
    *,
    output: Path,
    bootstrap: str | None,
    transport_kind: str,
    topics: str | None,
    idle: float,
) -> None:
    """Export topics to an Avro object container file (deflate), one record per Kafka record."""
    from choreo.tracker.sources import write_container_file

    source = Source(
        file_=None, bootstrap=bootstrap, transport_kind=transport_kind, topics=topics, idle=idle
    )
    try:
        names = source.topics()
        count = write_container_file(
            output, source.records(), metadata={"choreo.topics": ",".join(names)}
        )
    finally:
        source.close()
    click.echo(f"exported {count} records from {len(names)} topics to {output}")


@click.command("import")
@click.argument(
    "file_", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@kafka_options("The Kafka cluster to publish to.")
@click.option("--topics", metavar="REGEX", help="Only records of these topics.")
@click.option(
    "--topic-prefix", default="", help="Prefix every topic name (to import beside the originals)."
)
@_errors
def import_(
    *,
    file_: Path,
    bootstrap: str | None,
    transport_kind: str,
    topics: str | None,
    topic_prefix: str,
) -> None:
    """Publish the records of an exported file to a cluster (keys, values and headers kept).

    Topics are created first with as many partitions as the file shows; a record's key
    picks its partition, so with the same partition count records land where they were.
    """
    from choreo.tracker.sources import read_container_file

    source = Source(
        file_=None, bootstrap=bootstrap, transport_kind=transport_kind, topics=topics, idle=1.0
    )
    partitions: dict[str, int] = {}
    for record in read_container_file(file_):
        if source.wanted(record.topic):
            name = topic_prefix + record.topic
            partitions[name] = max(partitions.get(name, 0), record.partition + 1)
    transport = source.transport
    try:
        for count in sorted(set(partitions.values())):
            transport.create_topics(
                [name for name, n in partitions.items() if n == count], partitions=count
            )
        producer = transport.producer()
        published = 0
        try:
            for record in read_container_file(file_):
                if not source.wanted(record.topic):
                    continue
                producer.publish(
                    topic_prefix + record.topic,
                    record.value,
                    key=record.key,
                    headers=record.headers,
                )
                published += 1
                if published % 50_000 == 0:
                    producer.flush()
            producer.flush()
        finally:
            producer.close()
    finally:
        source.close()
    click.echo(f"imported {published} records into {len(partitions)} topics")
