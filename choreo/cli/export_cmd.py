"""``choreo export | import``: a cluster's topics to an Avro container file, and back."""

from __future__ import annotations

from pathlib import Path

import click

from choreo.cli._common import (
    kafka_options,
)
from choreo.cli._tracker_source import Source, _errors

__all__ = ["export", "import_"]

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
        file_=None,
        bootstrap=bootstrap,
        transport_kind=transport_kind,
        topics=topics,
        idle=idle,
        files=False,
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
        file_=None,
        bootstrap=bootstrap,
        transport_kind=transport_kind,
        topics=topics,
        idle=1.0,
        files=False,
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
