"""``choreo tracker run``: one tracker instance of a group that materializes saga summaries.

Start as many as you like with the same ``--group``: each folds the sagas of the
partitions the group gives it and writes their summaries to the summary topic (see
:mod:`choreo.tracker.group`), which ``choreo sagas|trace|watch|verify --summaries TOPIC``
and ``choreo ui --summaries TOPIC`` read. The summary topic is created with the replication
of the services' topics when asked for (``--replication-factor``,
``--min-insync-replicas``, or ``$CHOREO_TOPIC_REPLICATION_FACTOR`` and
``$CHOREO_TOPIC_MIN_INSYNC_REPLICAS``, as for ``choreo run``).

The process keeps many long-lived objects (the sagas kept in full), so the garbage
collector's full collections are made rare (:data:`GC_THRESHOLDS`): they walk every one
of them and cost a third of a rebuild's time at the default thresholds. Young
collections still run, and the tracker's objects are freed by reference counting.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

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
    replication_options,
    schemas_option,
    wait_for_interrupt,
)
from choreo.errors import ChoreoError
from choreo.tracker.group import GROUP_KEEP_FINISHED
from choreo.tracker.pacing import DEFAULT_WINDOW_MS
from choreo.tracker.summaries import DEFAULT_SUMMARY_TOPIC

__all__ = ["GC_THRESHOLDS", "run", "tracker"]

logger = logging.getLogger(__name__)

GC_THRESHOLDS = (10_000, 10, 1_000)
"""The collector's thresholds in a tracker instance (full collections ~100x rarer)."""


@click.group("tracker")
def tracker() -> None:
    """Run tracker instances that materialize saga summaries for the CLI and the viewer."""


@tracker.command("run")
@kafka_options("Kafka bootstrap servers.")
@registry_option()
@click.option("--group", "group_id", required=True, help="The tracker group (a consumer group).")
@click.option(
    "--summary-topic",
    default=DEFAULT_SUMMARY_TOPIC,
    show_default=True,
    help="The compacted topic the summaries are written to (created when missing).",
)
@click.option(
    "--topics",
    metavar="REGEX",
    default="^[^_].*",
    show_default=True,
    help="The event topics to fold (a regular expression; the summary topic never is).",
)
@click.option("--instance-id", help="This instance's name (default: host name and process id).")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Partitions of the summary topic when it is created (default: the event topics').",
)
@replication_options("the summary topic when it is created (as for the services' topics)")
@schemas_option(
    "Directory of .avsc schemas: payloads that do not decode are counted as unreadable."
)
@graph_option(
    "Module (or module:attribute) declaring the services: per-step deadlines and "
    "compensatable steps."
)
@deadline_option("Seconds a saga may wait for its next event when none is declared.")
@click.option(
    "--commit-interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between commits of summaries and offsets (one transaction each).",
)
@click.option(
    "--align-window",
    "align_window_ms",
    type=click.IntRange(min=0),
    default=DEFAULT_WINDOW_MS,
    show_default=True,
    help="Milliseconds (record time) a partition may read ahead of the slowest one before "
    "it is paused, so a saga's events on different topics are read together (0: off).",
)
@click.option(
    "--keep-finished",
    type=click.IntRange(min=0),
    default=GROUP_KEEP_FINISHED,
    show_default=True,
    help="Finished sagas kept unpacked per partition (a late event for one is cheap).",
)
def run(
    *,
    bootstrap: str | None,
    transport_kind: str,
    group_id: str,
    summary_topic: str,
    topics: str,
    instance_id: str | None,
    partitions: int | None,
    topic_replication_factor: int | None,
    topic_min_insync_replicas: int | None,
    schemas_dir: Path | None,
    graph: str | None,
    deadline: float,
    commit_interval: float,
    align_window_ms: int,
    keep_finished: int,
) -> None:
    """Fold this instance's share of the sagas and materialize them until Ctrl-C or SIGTERM."""
    from choreo.tracker.group import TrackerGroupMember
    from choreo.tracker.tracker import Tracker
    from choreo.transports.replication import check_replication

    bootstrap = bootstrap or configured_bootstrap()
    if bootstrap is None:
        raise click.UsageError("give --bootstrap HOST:PORT (or bootstrap.servers in --config)")
    try:
        new_tracker(schemas_dir=schemas_dir, choreography=graph, deadline_s=deadline)
        check_replication(topic_replication_factor, topic_min_insync_replicas)
        kafka = open_kafka(transport_kind, bootstrap)
    except (ChoreoError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    def make() -> Tracker:
        made: Tracker = new_tracker(
            schemas_dir=schemas_dir, choreography=graph, deadline_s=deadline,
            keep_finished=keep_finished,
        )
        return made

    member = TrackerGroupMember(
        kafka,
        group_id=group_id,
        summary_topic=summary_topic,
        topics_pattern=topics if topics.startswith("^") else f"^.*({topics})",
        instance_id=instance_id,
        new_tracker=make,
        partitions=partitions,
        commit_interval=commit_interval,
        align_window_ms=align_window_ms,
        replication_factor=topic_replication_factor,
        min_insync_replicas=topic_min_insync_replicas,
    )
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    member.start()
    click.echo(f"tracker instance {member.instance_id} of group {group_id} -> {summary_topic}"
               "  (Ctrl-C to stop)")
    try:
        wait_for_interrupt(lambda: bool(member.running), poll_seconds=0.5)
    finally:
        member.stop()
        close_transport(kafka)
        gc.set_threshold(*thresholds)  # as it was (when run inside another program)
        gc.unfreeze()
    if member.error is not None:
        raise click.ClickException(f"the tracker instance stopped: {member.error}")
    click.echo("stopped")
