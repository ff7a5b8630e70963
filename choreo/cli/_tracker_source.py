"""What the tracker's commands share: the record source, its options, times and errors.

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

import functools
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from choreo.cli._common import (
    close_transport,
    configured_bootstrap,
    deadline_option,
    graph_option,
    kafka_options,
    new_tracker,
    open_kafka,
    registry_option,
    schemas_option,
)
from choreo.errors import ChoreoError

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Command = Callable[..., Any]

def parse_time(text: str, *, now_ms: int) -> int:
    """Return epoch ms for ``text``: epoch ms digits, ISO 8601 (naive = UTC), or ``15m`` ago.

    See :func:`choreo.safety.timestamps.parse_moment`; raises ``click.BadParameter``
    naming the accepted forms.
    """
    from choreo.safety.timestamps import parse_moment

    try:
        return parse_moment(text, now_ms=now_ms)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
        click.option(
            "--summaries",
            metavar="TOPIC",
            help="With a cluster: read the saga summaries `choreo tracker run` instances "
            "materialize to TOPIC instead of folding the event topics.",
        ),
    ]
    params = ("file_", "bootstrap", "transport_kind", "topics", "idle", "summaries")
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
        schemas_option("Directory of .avsc schemas, to decode payloads."),
        graph_option("Module (or module:attribute) declaring the services: the choreography."),
        deadline_option("Seconds a saga may wait for its next event when none is declared."),
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


def _topics_error(exc: re.error) -> str:
    """Return what is wrong with a --topics expression and what one looks like."""
    return (
        f"invalid --topics expression: {exc}; give a Python regular expression such as"
        " '^shop\\.' (topics starting with 'shop.') or 'orders|payments'"
    )


def _errors(func: F) -> F:
    """Turn choreo's errors into clean click errors (exit 2 for usage, 1 otherwise)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ChoreoError as exc:
            raise click.ClickException(str(exc)) from exc
        except re.error as exc:
            raise click.BadParameter(_topics_error(exc)) from exc

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
        files: bool = True,
        summaries: str | None = None,
    ) -> None:
        """Say where records come from; ``files`` False for a command without ``--file``."""
        ctx = click.get_current_context()
        embedded = ctx.obj.get("transport") if isinstance(ctx.obj, dict) else None
        if file_ is not None and bootstrap is not None:
            raise click.UsageError(
                "give --file or --bootstrap, not both: --file reads an exported file,"
                " --bootstrap a cluster"
            )
        if file_ is None and bootstrap is None and embedded is None:
            bootstrap = configured_bootstrap()
            if bootstrap is None:
                cluster = (
                    "--bootstrap HOST:PORT, $CHOREO_KAFKA_BOOTSTRAP or bootstrap.servers in the"
                    " --config file"
                )
                raise click.UsageError(
                    f"no saga source: give --file PATH (a file written by `choreo export`), or"
                    f" a cluster with {cluster}"
                    if files
                    else f"no Kafka cluster: give {cluster}"
                )
        self.file = file_
        self.bootstrap = bootstrap
        self.transport_kind = transport_kind
        self.topics_regex = topics
        """The --topics expression as given (None for all but internal topics)."""
        try:
            self.pattern = re.compile(topics) if topics else None
        except re.error as exc:
            raise click.BadParameter(_topics_error(exc)) from exc
        self.idle = idle
        if summaries is not None and file_ is not None:
            raise click.UsageError("--summaries reads a cluster's summary topic, not a --file")
        self.summaries = summaries
        """The summary topic to read instead of the event topics (None: fold the events)."""
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

        topics = [self.summaries] if self.summaries is not None else self.topics()
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


def _load(source: Source, tracker: Any, now_text: str | None, keys: Any = None) -> int:
    """Feed every record of ``source`` to ``tracker`` (and to the business-key index
    ``keys`` when given), judge deadlines; return 'now'."""
    records = source.records()
    try:
        if source.summaries is not None:  # summaries carry no payloads: no business keys
            tracker.load_summaries(records)
        else:
            tracker.feed_many(records if keys is None else keys.tee(records))
    finally:
        source.close()
    now = source.now_ms(now_text)
    tracker.check_deadlines(now)
    return now


def _console() -> Any:
    from choreo.safety.terminal import console

    return console()
