"""A polled batch's first and next offsets per partition, and the batch trace check."""

from __future__ import annotations

from choreo.runtime.pauses import first_offsets, next_offsets
from choreo.runtime.tracing import all_valid, is_valid
from choreo.transports.base import Record, TopicPartition


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
