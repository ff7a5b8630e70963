"""The ``choreo ui`` command: argument checks, and serving an exported file until interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.cli import main
from choreo.cli.ui_cmd import build_tracker, check_host
from choreo.model.envelope import Role
from choreo.tracker.model import SagaStatus
from choreo.tracker.sources import write_container_file
from choreo.transports.base import Record
from choreo.viewer import ViewerServer

from .samples import SagaWriter, Sample, feed_sample

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class Recorder:
    """Stands for a tracker only to collect the records the sample would feed."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def feed_many(self, records: list[Record]) -> int:
        """Keep the records; return how many."""
        self.records.extend(records)
        return len(records)


@pytest.fixture
def exported_sample(tmp_path: Path) -> tuple[Path, Sample]:
    """Write the sample sagas' records to an Avro container file; return it and the sample."""
    recorder = Recorder()
    sample = feed_sample(recorder)  # type: ignore[arg-type]
    path = tmp_path / "sagas.avro"
    write_container_file(path, recorder.records)
    return path, sample


@pytest.fixture
def exported(exported_sample: tuple[Path, Sample]) -> Path:
    """Return the path of the exported sample."""
    return exported_sample[0]


def test_non_loopback_host_is_refused_without_allow_remote(exported: Path) -> None:
    """Serving on a non-loopback address needs --allow-remote."""
    result = CliRunner().invoke(main, ["ui", "--file", str(exported), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output


def test_exactly_one_source_is_required(exported: Path) -> None:
    """Neither or both of --bootstrap and --file is a usage error."""
    neither = CliRunner().invoke(main, ["ui"])
    assert neither.exit_code == 2
    assert "give exactly one source" in neither.output
    assert "CHOREO_KAFKA_BOOTSTRAP" in neither.output
    both = CliRunner().invoke(main, ["ui", "--file", str(exported), "--bootstrap", "h:1"])
    assert both.exit_code == 2


def test_check_host_accepts_loopback_and_warns_for_remote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Loopback hosts pass silently; an allowed remote host passes with a warning."""
    check_host("127.0.0.1", allow_remote=False)
    check_host("localhost", allow_remote=False)
    check_host("::1", allow_remote=False)
    assert capsys.readouterr().err == ""
    check_host("0.0.0.0", allow_remote=True)
    assert "without authentication" in capsys.readouterr().err


def test_build_tracker_reads_the_file(exported_sample: tuple[Path, Sample]) -> None:
    """The file's records are folded into the tracker the viewer serves."""
    path, sample = exported_sample
    tracker = build_tracker(file=path)
    assert tracker.total() == 4
    assert tracker.saga_types() == ["OrderFulfillment", "Refund"]
    compensated = tracker.get(sample.compensated)
    assert compensated is not None
    assert compensated.status is SagaStatus.FAILED
    assert [e.role for e in compensated.events][-2:] == [Role.COMPENSATION, Role.FAILED]
    assert tracker.payload(sample.compensated, sample.declined_event_id) is None  # no --schemas


def test_ui_serves_a_file_until_interrupted(exported: Path) -> None:
    """``choreo ui --file`` prints its address, serves the sagas, and stops on Ctrl-C."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo", "ui", "--file", str(exported), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("choreo viewer on http://127.0.0.1:"), first
        url = first.split()[3]
        with urllib.request.urlopen(url + "api/summary", timeout=10) as response:
            summary = json.loads(response.read())
        assert summary["total"] == 4
        assert summary["counts"]["Failed"] == 1
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


NOTE_SCHEMA = {
    "type": "record",
    "name": "Note",
    "namespace": "t",
    "doc": "A note.",
    "fields": [{"name": "text", "type": "string", "doc": "The text."}],
}


def test_schemas_let_the_viewer_show_avro_payloads(tmp_path: Path) -> None:
    """With --schemas, single-object-encoded payloads are decoded for the payload endpoint."""

    schemas = tmp_path / "schemas"
    (schemas / "t").mkdir(parents=True)
    (schemas / "t" / "Note.v1.avsc").write_text(json.dumps(NOTE_SCHEMA), encoding="utf-8")
    writer = SagaWriter("note-1")
    envelope = writer.emit("t.Note", Role.START, "notes")
    body = SingleObjectCodec(load_directory(schemas)).encode("t.Note", {"text": "<b>hi</b>"})
    record = writer.records[-1]
    path = tmp_path / "notes.avro"
    write_container_file(path, [replace(record, value=body)])
    tracker = build_tracker(file=path, schemas_dir=schemas)
    with ViewerServer(tracker) as viewer:
        url = f"{viewer.url}api/sagas/note-1/events/{envelope.event_id}/payload"
        with urllib.request.urlopen(url, timeout=10) as response:
            raw = response.read()
    assert b"<b>" not in raw
    assert json.loads(raw)["payload"] == {"text": "<b>hi</b>"}


def test_ui_sources_index_business_keys_of_the_file(tmp_path: Path) -> None:
    """build_sources feeds the file to the tracker and to a key index the viewer searches."""
    from choreo.cli.ui_cmd import build_sources

    schemas = tmp_path / "schemas"
    (schemas / "t").mkdir(parents=True)
    (schemas / "t" / "Note.v1.avsc").write_text(json.dumps(NOTE_SCHEMA), encoding="utf-8")
    codec = SingleObjectCodec(load_directory(schemas))
    records = []
    for i in range(3):
        writer = SagaWriter(f"note-{i}", start_ms=1_700_000_000_000 + i)
        writer.emit("t.Note", Role.START, "notes")
        body = codec.encode("t.Note", {"text": f"Ticket-{i}"})
        records.append(replace(writer.records[-1], value=body))
    path = tmp_path / "notes.avro"
    write_container_file(path, records)
    tracker, keys = build_sources(file=path, schemas_dir=schemas, key_index_sagas=10)
    assert keys is not None and len(keys) == 3
    with ViewerServer(tracker, keys=keys) as viewer:
        url = f"{viewer.url}api/sagas?q=text%3Dticket-1"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
    assert [row["correlation_id"] for row in answer["items"]] == ["note-1"]
    assert answer["items"][0]["matched_fields"] == ["text"]
    _, none = build_sources(file=path, schemas_dir=schemas)
    assert none is None
