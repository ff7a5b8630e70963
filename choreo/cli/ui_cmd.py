"""``choreo ui``: serve the saga-trace web viewer over a tracker until Ctrl-C.

The tracker is fed either live from Kafka (``--bootstrap``, through a
:class:`~choreo.tracker.live.LiveTracker`) or once from an exported Avro container file
(``--file``). The page is served on 127.0.0.1 unless ``--allow-remote`` is given: the
viewer has no authentication, so exposing it is an explicit decision.
"""

from __future__ import annotations

import logging
import webbrowser
from pathlib import Path
from typing import Any

import click

from choreo.cli._common import (
    close_transport,
    configured_bootstrap,
    deadline_option,
    kafka_options,
    new_tracker,
    open_kafka,
    registry_option,
    schemas_option,
    wait_for_interrupt,
)
from choreo.cli._observability import metrics_port_option, serve_tracker_metrics
from choreo.errors import ChoreoError
from choreo.tracker.keys import DEFAULT_MAX_SAGAS, KeyIndex

__all__ = ["build_sources", "build_tracker", "check_host", "ui"]

logger = logging.getLogger(__name__)


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuse (``click.UsageError``) a non-loopback ``host`` unless ``allow_remote`` is set."""
    from choreo.viewer.web import is_loopback

    if is_loopback(host):
        return
    if not allow_remote:
        raise click.UsageError(
            f"refusing to serve on {host!r}: the viewer has no authentication and shows "
            "event payloads; pass --allow-remote to expose it beyond this machine"
        )
    click.echo(
        f"warning: serving on {host} without authentication: anyone who can reach this "
        "port can read every saga and payload",
        err=True,
    )


def build_tracker(
    *,
    file: Path | None = None,
    schemas_dir: Path | None = None,
    choreography: str | None = None,
    deadline_s: float = 30.0,
) -> Any:
    """Return a Tracker that decodes payloads and knows the declared graph, fed from ``file``."""
    tracker, _ = build_sources(
        file=file, schemas_dir=schemas_dir, choreography=choreography, deadline_s=deadline_s
    )
    return tracker


def build_sources(
    *,
    file: Path | None = None,
    schemas_dir: Path | None = None,
    choreography: str | None = None,
    deadline_s: float = 30.0,
    key_index_sagas: int = 0,
) -> tuple[Any, KeyIndex | None]:
    """Return the viewer's tracker (as :func:`build_tracker`) and its business-key index.

    With ``key_index_sagas`` > 0 the index (of at most that many sagas) decodes payloads
    as the tracker does and is fed the same records; otherwise it is None.
    """
    tracker = new_tracker(schemas_dir=schemas_dir, choreography=choreography, deadline_s=deadline_s)
    keys = KeyIndex(decode=tracker.decode, max_sagas=key_index_sagas) if key_index_sagas else None
    if file is not None:
        from choreo.tracker.sources import read_container_file

        records = read_container_file(file)
        count = tracker.feed_many(records if keys is None else keys.tee(records))
        logger.info("read %d records from %s", count, file)
    return tracker, keys


@click.command("ui")
@kafka_options("Kafka bootstrap servers to follow live.")
@registry_option()
@click.option(
    "--topics",
    metavar="REGEX",
    default="^.*",
    show_default=True,
    help="Topics to follow with --bootstrap (a regular expression).",
)
@click.option(
    "--summaries",
    metavar="TOPIC",
    help="With --bootstrap: show the saga summaries `choreo tracker run` instances "
    "materialize to TOPIC instead of folding the topics.",
)
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Avro container file written by `choreo export`, read once.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to serve on (0 picks a free one).",
)
@schemas_option("Directory of .avsc schemas, to show decoded payloads.")
@click.option(
    "--choreography",
    metavar="TARGET",
    help="Module or module:attribute declaring the services, to draw the declared graph.",
)
@deadline_option("Seconds a saga may wait for its next event before it is called stuck.")
@click.option("--open/--no-open", "open_browser", default=False, help="Open the page in a browser.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host (there is no authentication).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Another host name the page may be reached by (repeatable; with --allow-remote).",
)
@click.option(
    "--key-index-sagas",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_SAGAS,
    show_default=True,
    help=(
        "How many sagas the search box can find by business key (order_id=123,"
        " alice@example.com; the least recently active are forgotten first); 0 searches"
        " correlation ids only. Payload fields need --schemas."
    ),
)
@metrics_port_option("the saga metrics (sagas per status, stuck sagas, durations)")
def ui(
    *,
    bootstrap: str | None,
    transport_kind: str,
    topics: str,
    summaries: str | None,
    file_: Path | None,
    host: str,
    port: int,
    schemas_dir: Path | None,
    choreography: str | None,
    deadline: float,
    open_browser: bool,
    allow_remote: bool,
    allowed_hosts: tuple[str, ...],
    key_index_sagas: int = DEFAULT_MAX_SAGAS,
    metrics_address: tuple[str, int] | None = None,
) -> None:
    """Serve the saga-trace web viewer (read-only) until Ctrl-C."""
    if bootstrap is None and file_ is None:
        bootstrap = configured_bootstrap()
    if (bootstrap is None) == (file_ is None):
        raise click.UsageError(
            "give exactly one source: --file PATH (a file written by `choreo export`), or a"
            " cluster with --bootstrap HOST:PORT, $CHOREO_KAFKA_BOOTSTRAP or bootstrap.servers"
            " in the --config file"
        )
    if summaries is not None and file_ is not None:
        raise click.UsageError("--summaries follows a cluster's summary topic, not a --file")
    check_host(host, allow_remote=allow_remote)
    from choreo.viewer.web import ViewerServer

    try:
        tracker, keys = build_sources(
            file=file_,
            schemas_dir=schemas_dir,
            choreography=choreography,
            deadline_s=deadline,
            key_index_sagas=key_index_sagas,
        )
    except (ChoreoError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if metrics_address is not None:
        click.get_current_context().call_on_close(
            serve_tracker_metrics(tracker, metrics_address).stop
        )

    live: Any = None
    kafka: Any = None
    try:
        if bootstrap is not None:
            from choreo.tracker.live import LiveTracker

            try:
                kafka = open_kafka(transport_kind, bootstrap)
            except ChoreoError as exc:
                raise click.ClickException(str(exc)) from exc
            live = LiveTracker(
                tracker,
                kafka,
                topics_pattern=topics,
                from_beginning=True,
                on_batch=keys.observe if keys is not None and summaries is None else None,
                topics=[summaries] if summaries else None,
                materialized=summaries is not None,
            )
            live.start()
        try:
            server = ViewerServer(
                tracker, host=host, port=port, allowed_hosts=allowed_hosts, keys=keys
            )
        except OSError as exc:
            raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from exc
        server.start()
        try:
            click.echo(f"choreo viewer on {server.url}  (Ctrl-C to stop)")
            if open_browser:
                webbrowser.open(server.url)
            wait_for_interrupt()
        finally:
            server.stop()
    finally:
        if live is not None:
            live.stop()
        close_transport(kafka)
    click.echo("stopped")
