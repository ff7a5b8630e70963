"""Export from and import to a real Kafka broker, then verify the copy."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner
from tracker_log import SagaLog

from choreo.cli import main
from choreo.tracker.live import read_topics
from choreo.tracker.sources import read_container_file
from choreo.transports.factory import open_transport

pytestmark = pytest.mark.kafka

IDLE = "1"
"""Seconds of quiet that end a read: counted from the assignment on, when every record of
these tests is already in its topic, so it only has to outlast one fetch (it was 3 s, three
times per test). A read cut short loses records, which the counts below would show; a
loaded machine's first fetch can outlast it, so each read is repeated until it is whole
(:func:`_until`)."""

T = TypeVar("T")


def _until(read: Callable[[], T], whole: Callable[[T], bool], seconds: float = 60.0) -> T:
    """Return ``read()`` once ``whole`` holds of it, or its last result after ``seconds``
    (the caller's assertions then say what was missing)."""
    deadline = time.monotonic() + seconds
    while True:
        got = read()
        if whole(got) or time.monotonic() > deadline:
            return got


def test_export_import_roundtrip(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Topics exported to a file and imported under a prefix hold the same records."""
    prefix = unique_name("trk")
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    logs = [SagaLog().completed(), SagaLog().declined()]
    topics = sorted({f"{prefix}.{env.event_type}" for log in logs for env in log.envelopes})
    transport.create_topics(topics, partitions=2)
    producer = transport.producer()
    for log in logs:
        for env in log.envelopes:
            producer.publish(f"{prefix}.{env.event_type}", b"payload",
                             key=env.correlation_id.encode(), headers=env.to_headers())
    producer.flush()
    producer.close()
    runner = CliRunner()
    out = tmp_path / "export.avro"
    pattern = "^" + re.escape(prefix) + r"\."

    def export() -> list[Any]:
        result = runner.invoke(main, ["export", "-o", str(out), "--bootstrap", kafka_bootstrap,
                                      "--topics", pattern, "--idle", IDLE])
        assert result.exit_code == 0, result.output
        return list(read_container_file(out))

    exported = _until(export, lambda records: len(records) >= 10)
    assert len(exported) == 10
    assert {r.topic for r in exported} == set(topics)

    copy = unique_name("copy") + "."
    result = runner.invoke(main, ["import", str(out), "--bootstrap", kafka_bootstrap,
                                  "--topic-prefix", copy])
    assert result.exit_code == 0, result.output
    assert "imported 10 records into 8 topics" in result.output
    copied = _until(
        lambda: list(read_topics(transport, [copy + t for t in topics], idle_timeout=float(IDLE))),
        lambda records: len(records) >= len(exported),
    )
    assert sorted((r.key, r.value, r.headers) for r in copied) == sorted(
        (r.key, r.value, r.headers) for r in exported
    )
    verify = ["verify", "--bootstrap", kafka_bootstrap, "--topics", "^" + re.escape(copy),
              "--idle", IDLE]
    result = _until(lambda: runner.invoke(main, verify), lambda got: "(10 events)" in got.output)
    assert result.exit_code == 0, result.output
    assert "no violation in 2 sagas (10 events)" in result.output
