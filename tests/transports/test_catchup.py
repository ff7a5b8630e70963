"""Catch-up reads on the memory bus: a partition written to all the time still ends the read."""

from __future__ import annotations

import threading
import time

from choreo.transports.base import TopicPartition
from choreo.transports.catchup import CatchUp, read_to_ends
from choreo.transports.memory import MemoryTransport


def test_a_partition_written_during_the_read_is_read_up_to_its_end_at_assignment() -> None:
    """A writer that never pauses: the read stops at the end it took, every record below it."""
    transport = MemoryTransport()
    transport.create_topics(["busy", "quiet"], partitions=1)
    producer = transport.producer()
    for n in range(500):
        producer.publish("busy", str(n).encode())
    producer.publish("quiet", b"q")
    producer.flush()
    stop = threading.Event()

    def write() -> None:
        writer = transport.producer()
        while not stop.is_set():
            writer.publish("busy", b"later")
            writer.flush()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    report = CatchUp()
    try:
        started = time.monotonic()
        offsets = [
            (r.topic, r.offset) for r in read_to_ends(transport, ["busy", "quiet"], report=report)
        ]
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
    end = report.ends[TopicPartition("busy", 0)]
    assert end >= 500
    assert [o for t, o in offsets if t == "busy"] == list(range(end))
    assert [o for t, o in offsets if t == "quiet"] == [0]
    assert not report.timed_out and report.behind == set()
    assert took < 10


def test_nothing_to_read_ends_at_once_and_a_topic_list_of_none_reads_nothing() -> None:
    """Empty partitions are caught up as soon as their ends are known."""
    transport = MemoryTransport()
    transport.create_topics(["empty"], partitions=3)
    report = CatchUp()
    assert list(read_to_ends(transport, ["empty"], report=report)) == []
    assert report.ends == {TopicPartition("empty", p): 0 for p in range(3)}
    assert not report.timed_out
    assert list(read_to_ends(transport, [])) == []
