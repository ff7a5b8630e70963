"""``choreo ui --bootstrap`` against a real broker: the page's API shows the sagas on a topic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from choreo.transports.base import Record
from choreo.transports.factory import open_transport

from .samples import feed_sample

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class Recorder:
    """Collects the records the sample would feed."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def feed_many(self, records: list[Record]) -> int:
        """Keep the records; return how many."""
        self.records.extend(records)
        return len(records)


def summary_of(url: str) -> dict[str, Any]:
    """Return the viewer's /api/summary."""
    with urllib.request.urlopen(url + "api/summary", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


@pytest.mark.kafka
@pytest.mark.parametrize("transport", ["confluent", "kafka-python"])
def test_ui_follows_a_topic_live(
    kafka_bootstrap: str, unique_name: Callable[[str], str], transport: str
) -> None:
    """Sagas published to a topic appear in the served summary, and more arrive live."""
    topic = unique_name("viewer-live")
    kafka = open_transport("confluent", bootstrap=kafka_bootstrap)
    kafka.create_topics([topic])
    recorder = Recorder()
    sample = feed_sample(recorder)  # type: ignore[arg-type]
    producer = kafka.producer()
    first, later = recorder.records[:-2], recorder.records[-2:]  # the refund saga comes later
    for record in first:
        producer.publish(topic, record.value, key=record.key, headers=record.headers)
    producer.flush(30)

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "choreo",
            "ui",
            "--bootstrap",
            kafka_bootstrap,
            "--transport",
            transport,
            "--topics",
            f"^{topic}$",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("choreo viewer on http://127.0.0.1:"), line
        url = line.split()[3]
        deadline = time.monotonic() + 60
        while summary_of(url)["total"] < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        summary = summary_of(url)
        assert summary["total"] == 3
        assert summary["counts"]["Failed"] == 1

        for record in later:
            producer.publish(topic, record.value, key=record.key, headers=record.headers)
        producer.flush(30)
        while summary_of(url)["total"] < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        with urllib.request.urlopen(f"{url}api/sagas?q={sample.refund}", timeout=10) as reply:
            rows = json.loads(reply.read())["items"]
        assert [row["status"] for row in rows] == ["Completed"]

        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        producer.close()
        if process.poll() is None:
            process.kill()
            process.communicate()
