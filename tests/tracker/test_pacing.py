"""Record-time alignment of a tracker instance's partitions: which run ahead are paused,
and nothing is ever left paused for good (idle partitions, the end of the log)."""

from __future__ import annotations

import time

import pytest

from choreo.tracker.pacing import BEHIND_MS, IDLE_POLLS, TimeAlignment, catching_up
from choreo.transports.base import Record, TopicPartition

COMMON = TopicPartition("shop.OrderCreated", 0)
RARE = TopicPartition("shop.PaymentDeclined", 0)
OTHER = TopicPartition("shop.OrderShipped", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _records(tp: TopicPartition, *times: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, n, b"k", b"v", (), at) for n, at in enumerate(times)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_partition_ahead_by_more_than_the_window_is_paused_then_resumed(clock: Clock) -> None:
    """The rare type's partition jumped 5 s ahead: it waits until the common one is within
    the window of it, then is resumed."""
    align = TimeAlignment(1_000, idle_s=1.0, clock=clock)
    align.observe(_records(COMMON, 1_000, 1_100) + _records(RARE, 1_050, 6_000))
    assert align.decide() == ([RARE], [])
    assert align.paused == {RARE}
    clock.now += 0.1
    align.observe(_records(COMMON, 3_000))
    assert align.decide() == ([], [])  # 6 000 is still more than 1 s past 3 000
    clock.now += 0.1
    align.observe(_records(COMMON, 5_000))
    assert align.decide() == ([], [RARE])
    assert not align.paused
    assert align.pauses == 1


def test_the_slowest_partition_is_never_paused(clock: Clock) -> None:
    align = TimeAlignment(500, clock=clock)
    align.observe(_records(COMMON, 10) + _records(RARE, 20_000) + _records(OTHER, 40_000))
    pause, resume = align.decide()
    assert set(pause) == {RARE, OTHER}
    assert COMMON not in pause and resume == []
    assert align.frontier() == 10


def test_an_idle_partition_stops_holding_the_others_back(clock: Clock) -> None:
    """The common partition reached the end of its log (returns nothing): after idle_s the
    rare one is resumed, so the read never stalls on a partition that has nothing more."""
    align = TimeAlignment(1_000, idle_s=1.0, clock=clock)
    align.observe(_records(COMMON, 1_000) + _records(RARE, 9_000))
    assert align.decide() == ([RARE], [])
    clock.now += 0.5
    align.observe([])
    assert align.decide() == ([], [])  # not idle for long enough yet
    clock.now += 0.6
    # COMMON idle; RARE, paused, is not idle: it is the frontier now, so it is resumed
    assert align.frontier() == 9_000
    assert align.decide() == ([], [RARE])
    clock.now += 1.1
    assert align.frontier() is None  # RARE returned nothing since it was resumed


def test_end_of_log_resumes_everything(clock: Clock) -> None:
    align = TimeAlignment(100, idle_s=0.5, clock=clock)
    align.observe(_records(COMMON, 0) + _records(RARE, 1_000) + _records(OTHER, 2_000))
    assert set(align.decide()[0]) == {RARE, OTHER}
    clock.now += 1.0
    assert align.decide() == ([], [RARE])  # the oldest paused one goes first
    clock.now += 1.0
    assert align.decide() == ([], [OTHER])
    assert not align.paused


def test_a_paused_partition_behind_the_others_is_resumed(clock: Clock) -> None:
    """A partition paused while ahead is resumed when the others overtake it, and it is
    then the frontier (paused partitions count, or a run-away one could hide them)."""
    align = TimeAlignment(1_000, clock=clock)
    align.observe(_records(COMMON, 0) + _records(RARE, 5_000))
    assert align.decide() == ([RARE], [])
    align.observe(_records(COMMON, 60_000))  # one poll of a minute of COMMON
    assert align.frontier() == 5_000
    assert align.decide() == ([COMMON], [RARE])


def test_records_too_far_ahead_are_held_in_partition_order(clock: Clock) -> None:
    """A poll that spans a minute of one partition is folded only up to the window past
    the frontier; the rest is released, in each partition's order, as the others come."""
    align = TimeAlignment(1_000, clock=clock)
    first = align.release(_records(COMMON, 0, 500) + _records(RARE, 900, 30_000, 1_200))
    assert [r.timestamp_ms for r in first] == [0, 500, 900]  # 1 200 waits behind 30 000
    assert align.held == 2
    second = align.release(_records(COMMON, 29_500))
    assert [(r.topic, r.timestamp_ms) for r in second] == [
        (RARE.topic, 30_000), (RARE.topic, 1_200), (COMMON.topic, 29_500)
    ]
    assert align.held == 0


def test_everything_held_is_released_when_all_is_idle(clock: Clock) -> None:
    align = TimeAlignment(1_000, idle_s=0.5, clock=clock)
    assert align.release(_records(COMMON, 0) + _records(RARE, 50_000)) == _records(COMMON, 0)
    clock.now += 1.0  # both returned nothing since: the end of the log
    released = align.release([])
    assert [r.timestamp_ms for r in released] == [50_000]
    assert align.held == 0


def test_a_revoked_partitions_held_records_are_dropped(clock: Clock) -> None:
    align = TimeAlignment(1_000, clock=clock)
    align.release(_records(COMMON, 0) + _records(RARE, 50_000))
    assert align.held == 1
    align.reset([RARE])
    assert align.held == 0
    assert align.release([]) == []


def test_partitions_without_timestamps_or_records_do_not_count(clock: Clock) -> None:
    """A partition whose records carry no timestamp (-1), or that returned nothing yet,
    neither defines the frontier nor is paused."""
    align = TimeAlignment(100, clock=clock)
    align.observe(_records(OTHER, -1, -1) + _records(COMMON, 5_000))
    assert align.frontier() == 5_000
    assert align.decide() == ([], [])


def test_a_revoked_partition_is_forgotten(clock: Clock) -> None:
    align = TimeAlignment(100, clock=clock)
    align.observe(_records(COMMON, 0) + _records(RARE, 1_000))
    assert align.decide() == ([RARE], [])
    align.reset([RARE])
    assert not align.paused and RARE not in align.last_ms
    assert align.decide() == ([], [])


def test_a_zero_window_turns_alignment_off(clock: Clock) -> None:
    align = TimeAlignment(0, clock=clock)
    align.observe(_records(COMMON, 0) + _records(RARE, 10**9))
    assert not align.enabled
    assert align.decide() == ([], [])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window_ms"):
        TimeAlignment(-1)
    with pytest.raises(ValueError, match="idle_s"):
        TimeAlignment(100, idle_s=0)


def test_a_full_poll_or_an_old_record_means_catching_up() -> None:
    now_ms = int(time.time() * 1000)
    assert catching_up(_records(COMMON, now_ms, now_ms), batch_size=2)
    assert not catching_up(_records(COMMON, now_ms), batch_size=2)
    assert catching_up(_records(COMMON, now_ms - BEHIND_MS - 5_000), batch_size=100)
    assert not catching_up(_records(COMMON, -1), batch_size=100)  # no timestamp: no signal
    assert not catching_up([], batch_size=100)


def test_a_slow_reader_does_not_make_a_partition_look_idle(clock: Clock) -> None:
    """Seconds between polls (a loaded machine) are not idleness: a partition must also
    miss IDLE_POLLS polls that returned records of others."""
    align = TimeAlignment(1_000, idle_s=1.0, clock=clock)
    align.observe(_records(COMMON, 1_000) + _records(RARE, 1_500))
    for n in range(1, IDLE_POLLS):
        clock.now += 2.0
        align.observe(_records(RARE, 1_500 + n))
        assert align.frontier() == 1_000, n  # COMMON still counts
    clock.now += 2.0
    align.observe(_records(RARE, 1_500 + IDLE_POLLS))
    assert align.frontier() == 1_500 + IDLE_POLLS  # it missed IDLE_POLLS polls: idle
