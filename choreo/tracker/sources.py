"""Exported logs: Kafka records <-> an Avro object container file, readable with no broker.

One container record per Kafka record: topic, partition, offset, timestamp, key bytes,
value bytes and the headers as an array of ``{key, value}`` (bytes). The file is written
with fastavro's ``writer`` (deflate codec) and read back, block by block, by choreo's
bounded container reader (:mod:`choreo.avro.container`): a file someone sends is untrusted,
so only files whose schema is the export schema are read, with limits on every size the
file claims. Both directions stream: a file of millions of records never has to fit in
memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

import fastavro

from choreo.avro.container import read_blocks
from choreo.transports.base import Record

__all__ = [
    "ACCEPTED_EXPORT_SCHEMAS",
    "EXPORT_SCHEMA",
    "ContainerReader",
    "read_container_file",
    "write_container_file",
]

logger = logging.getLogger(__name__)

EXPORT_SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "ExportedRecord",
    "namespace": "choreo.export",
    "doc": "One Kafka record, exported by `choreo export`.",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": "long", "doc": "epoch ms; -1 when unknown"},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": ["null", "bytes"], "default": None},
        {
            "name": "headers",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "ExportedHeader",
                    "fields": [
                        {"name": "key", "type": "string"},
                        {"name": "value", "type": "bytes"},
                    ],
                },
            },
            "default": [],
        },
    ],
}

_PARSED_SCHEMA: Final = fastavro.parse_schema(EXPORT_SCHEMA)
ACCEPTED_EXPORT_SCHEMAS: Final = (EXPORT_SCHEMA,)
"""Writer schemas an export file may have (their Parsing Canonical Forms): today's only."""


def _to_container(record: Record) -> dict[str, Any]:
    """Return the container datum of one Kafka record."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": record.key,
        "value": record.value,
        "headers": [{"key": k, "value": v} for k, v in record.headers],
    }


def _from_container(datum: dict[str, Any]) -> Record:
    """Return the Kafka record of one container datum."""
    return Record(
        datum["topic"],
        datum["partition"],
        datum["offset"],
        datum["key"],
        datum["value"],
        tuple([(h["key"], h["value"]) for h in datum["headers"]]),
        datum["timestamp"],
    )


def write_container_file(
    path: str | os.PathLike[str],
    records: Iterable[Record],
    *,
    codec: str = "deflate",
    metadata: dict[str, str] | None = None,
) -> int:
    """Write ``records`` to an Avro object container file at ``path``; return how many.

    The file is written next to its final name and renamed at the end, so a reader never
    sees a half-written file (nor is one left behind when ``records`` raises).
    """
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    count = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        for record in records:
            count += 1
            yield _to_container(record)

    try:
        with partial.open("wb") as out:
            fastavro.writer(
                out, _PARSED_SCHEMA, counted(), codec=codec, metadata=metadata,
                sync_interval=64_000,
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    logger.info("wrote %d records to %s", count, target)
    return count


class ContainerReader:
    """Iterates the Kafka records of an exported container file, reporting its progress.

    ``bytes_read`` / ``total_bytes`` say how far the reader is (block granularity), for a
    progress bar; ``on_progress(bytes_read)`` is called after each block when given.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.total_bytes = self.path.stat().st_size
        self.bytes_read = 0
        self._on_progress = on_progress

    def __iter__(self) -> Iterator[Record]:
        """Yield every record of the file in the order it was written."""
        with self.path.open("rb") as stream:
            yield from self._records(stream)

    def _records(self, stream: BinaryIO) -> Iterator[Record]:
        # the file is untrusted: its schema is only compared with ours, its bytes are
        # decoded by choreo's bounded decoder (choreo.avro.container), never by fastavro
        blocks = read_blocks(
            stream,
            ACCEPTED_EXPORT_SCHEMAS,
            label=str(self.path),
            refusal="was not written by `choreo export` (not the export schema)",
        )
        make = _from_container
        for block in blocks:
            for datum in block:
                yield make(datum)
            self.bytes_read = stream.tell()
            if self._on_progress is not None:
                self._on_progress(self.bytes_read)


def read_container_file(
    path: str | os.PathLike[str],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Record]:
    """Yield the Kafka records of an Avro object container file written by `choreo export`.

    Raises :class:`~choreo.errors.DecodeError` when the file is not such a file or is
    truncated.
    """
    return iter(ContainerReader(path, on_progress=on_progress))
