"""A polled batch's first and next offsets per partition, and the batch trace check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_runtime import build, fill  # noqa: E402
from choreo.runtime import Worker  # noqa: E402
from choreo.runtime.pauses import first_offsets, next_offsets  # noqa: E402
from choreo.runtime.tracing import all_valid, is_valid  # noqa: E402
from choreo.transports.base import Record, TopicPartition  # noqa: E402
from choreo.transports.memory import MemoryBus, MemoryTransport  # noqa: E402


def _batch(*where: tuple[str, int, int]) -> list[Record]:
    return [Record(topic, partition, offset, None, b"v") for topic, partition, offset in where]


def test_one_partition_gives_its_first_and_next_offsets() -> None:
    """The common batch (one partition) takes its first and last records' offsets."""
    batch = _batch(*[("a", 2, n) for n in range(40, 45)])
    assert first_offsets(batch) == {TopicPartition("a", 2): 40}
    assert next_offsets(batch) == {("a", 2): 45}


def test_interleaved_partitions_each_get_their_own_offsets() -> None:
    """Partitions interleaved in one batch: the first and one past the last of each."""
    batch = _batch(("a", 0, 7), ("a", 1, 3), ("b", 0, 9), ("a", 0, 8), ("a", 1, 4), ("a", 0, 9))
    assert first_offsets(batch) == {
        TopicPartition("a", 0): 7,
        TopicPartition("a", 1): 3,
        TopicPartition("b", 0): 9,
    }
    assert next_offsets(batch) == {("a", 0): 10, ("a", 1): 5, ("b", 0): 10}
    # same partition number, another topic: not one partition
    assert next_offsets(_batch(("a", 0, 1), ("b", 0, 5))) == {("a", 0): 2, ("b", 0): 6}


def test_an_empty_batch_has_no_offsets() -> None:
    """Nothing polled (or nothing handled): no offsets to commit or rewind to."""
    assert first_offsets([]) == {}
    assert next_offsets([]) == {}


def test_all_valid_skips_none_and_checks_every_other_item() -> None:
    """None stands for "no traceparent"; every other item must be valid, b"" included."""
    good = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    bad = b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"
    assert is_valid(good) and not is_valid(bad)
    assert all_valid([good, None, good]) and all_valid([None, None]) and all_valid([])
    assert not all_valid([good, None, bad]) and not all_valid([None, b""])
    assert all_valid(iter([good, None]))  # any iterable


@pytest.mark.parametrize("partitions", [1, 2])
def test_dispatch_gives_the_same_output_whatever_it_is_told_of_the_partitions(
    partitions: int,
) -> None:
    """A batch's next offsets, records and ids do not depend on the worker's one-partition
    hint: told (True for one partition, as the worker says), found out (None), or not
    used (False: per record)."""
    bus = MemoryBus(default_partitions=partitions)
    fill(bus, 7)
    records = bus.records("bench.shop.ItemPlaced")
    hints = [None, False] + ([True] if partitions == 1 else [])
    outputs = []
    for hint in hints:
        _, stock, _, serde = build()
        worker = Worker(stock, MemoryTransport(MemoryBus()), serde)
        output = worker.dispatcher.dispatch(records, one_partition=hint)
        outputs.append((output.next_offsets, [r[:4] for r in output.records], output.ids))
        worker.close()
    assert all(output == outputs[0] for output in outputs)
    assert outputs[0][0] == next_offsets(records)
    assert sum(outputs[0][0].values()) == 7
