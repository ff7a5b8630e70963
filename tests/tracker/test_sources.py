"""Exported container files: write, read back, and refuse what is not one."""

from __future__ import annotations

from pathlib import Path

import fastavro
import pytest
from tracker_log import SagaLog, to_records

from choreo.errors import DecodeError
from choreo.tracker.sources import ContainerReader, read_container_file, write_container_file
from choreo.transports.base import Record


def test_roundtrip_keeps_every_field(tmp_path: Path) -> None:
    """Every record comes back with topic, partition, offset, timestamp, key, value, headers."""
    records = to_records(SagaLog().completed().envelopes)
    records.append(Record("bare", 2, 7, None, None, (), -1))
    path = tmp_path / "log.avro"
    assert write_container_file(path, records) == len(records)
    assert list(read_container_file(path)) == records
    assert not (tmp_path / "log.avro.partial").exists()


def test_reader_reports_progress(tmp_path: Path) -> None:
    """The reader calls on_progress and ends having read the whole file."""
    records = to_records(SagaLog().completed().envelopes * 50)
    path = tmp_path / "log.avro"
    write_container_file(path, records)
    seen: list[int] = []
    reader = ContainerReader(path, on_progress=seen.append)
    assert sum(1 for _ in reader) == len(records)
    assert seen and seen[-1] == reader.total_bytes == reader.bytes_read


def test_other_avro_files_are_refused(tmp_path: Path) -> None:
    """An Avro file of another schema raises DecodeError naming the file."""
    path = tmp_path / "other.avro"
    schema = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    with path.open("wb") as out:
        fastavro.writer(out, schema, [{"x": 1}])
    with pytest.raises(DecodeError, match="choreo export"):
        list(read_container_file(path))


def test_garbage_is_refused(tmp_path: Path) -> None:
    """A file that is not an Avro container raises DecodeError."""
    path = tmp_path / "junk.avro"
    path.write_bytes(b"not avro at all")
    with pytest.raises(DecodeError):
        list(read_container_file(path))


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    """When the records raise mid-way, neither the file nor its partial copy is left."""
    records = to_records(SagaLog().completed().envelopes)

    def broken() -> object:
        yield from records[:2]
        raise RuntimeError("broker went away")

    path = tmp_path / "log.avro"
    with pytest.raises(RuntimeError):
        write_container_file(path, broken())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
