"""``choreo transactions``: find Kafka transactions left hanging, and end them.

A restarted broker can leave a transaction open on partitions with no coordinator to end
it (see :mod:`choreo.transports.hanging` and docs/operating.md): ``read_committed`` readers
of those partitions, and the members of a group whose offsets it holds, wait for good.
"""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING

import click

from choreo.cli._common import client_config, config_option
from choreo.cli._tracker_source import _errors
from choreo.errors import TransportError
from choreo.safety.text import printable

if TYPE_CHECKING:
    from choreo.transports.config import KafkaConfig
    from choreo.transports.hanging import Hanging

__all__ = ["transactions"]


@click.group("transactions")
def transactions() -> None:
    """Find Kafka transactions left hanging on partitions (after a broker restart), end them."""


@transactions.command("hanging")
@click.option("--bootstrap", metavar="HOST:PORT", help="The Kafka cluster to search.")
@config_option()
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="NAME",
    help="Search this topic (repeatable); default: every topic, __consumer_offsets included.",
)
@click.option(
    "--min-age",
    type=click.FloatRange(min=0.0),
    default=120.0,
    show_default=True,
    help="Seconds since the producer last wrote to the partition: keep it above the "
    "producers' transaction.timeout.ms plus 10 s, so a transaction the broker is about to "
    "time out is not listed.",
)
@click.option(
    "--end",
    is_flag=True,
    help="Write each one's remedy marker (commit, or abort: see its 'remedy').",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per transaction.")
@_errors
def hanging(
    *, bootstrap: str | None, topics: tuple[str, ...], min_age: float, end: bool, as_json: bool
) -> None:
    """List transactions open on a partition that no coordinator will end; exit 1 if any.

    The remedy is what the transaction's coordinator decided when its state still shows
    it; otherwise commit on a data partition and abort on __consumer_offsets, the markers
    that lose no record of choreo's (duplicates carry the same event ids, which every
    inbox drops). Kafka's own kafka-transactions.sh can only abort, which loses the
    outputs of a transaction the restarted broker had committed.
    """
    from choreo.transports.hanging import find_hanging

    config = client_config(bootstrap)
    found = find_hanging(config, list(topics) or None, min_age=min_age)
    failures = 0
    for item in found:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "topic": item.partition.topic,
                        "partition": item.partition.partition,
                        "producer_id": item.producer_id,
                        "producer_epoch": item.producer_epoch,
                        "start_offset": item.start_offset,
                        "age_s": round(item.age, 1),
                        "transactional_id": item.transactional_id,
                        "coordinator_state": item.coordinator_state,
                        "outcome": item.outcome,
                        "remedy": item.remedy,
                    }
                )
            )
        else:
            click.echo(_wrapped(item.describe()))
        if end:
            failures += not _end(config, item, quiet=as_json)
    if not found:
        if not as_json:
            click.echo("no hanging transaction", err=True)
        return
    if not end:
        raise SystemExit(1)
    if failures:
        click.echo(
            f"{len(found) - failures} of {len(found)} hanging transaction(s) ended, "
            f"{failures} not: run the command again",
            err=True,
        )
        raise SystemExit(1)
    click.echo(printable(f"{len(found)} hanging transaction(s) ended"), err=True)


def _end(config: KafkaConfig, item: Hanging, *, quiet: bool) -> bool:
    """Write ``item``'s remedy marker; return False (saying why on stderr) when refused.

    One refusal (a transaction a worker ended meanwhile, a partition without a leader)
    does not stop the others from being ended.
    """
    from choreo.transports.hanging import end_hanging

    try:
        end_hanging(config, item, commit=item.remedy == "commit")
    except TransportError as exc:
        click.echo(f"  not ended: {printable(str(exc))}", err=True)
        return False
    if not quiet:
        click.echo(f"  ended: {item.remedy} marker written", err=True)
    return True


def _wrapped(line: str) -> str:
    """Return ``line`` (escaped already) cut into lines that fit the terminal (80 columns
    when it is not one), the ones after the first indented."""
    from choreo.safety.terminal import console

    width = max(40, console().width)
    return textwrap.fill(
        line, width, subsequent_indent="    ", break_long_words=True, break_on_hyphens=False
    )
