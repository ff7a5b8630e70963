"""The chaos harness waits for notifications as it waits for sagas: late is fine, a stall is not.

A saga that ends late is no finding as long as sagas keep ending; its notification is held
to the same rule (:func:`chaos_suite.runner.wait_for`): the count must reach its target
unless it stops moving for the stall window (then the missing ones are reported).
"""

from __future__ import annotations

import sys
import time

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

from chaos_suite.runner import wait_for


class _Arrivals:
    """A count that grows by one every ``every`` calls, up to ``until``."""

    def __init__(self, until: int, every: int = 1) -> None:
        self.until = until
        self.every = every
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return min(self.until, self.calls // self.every)


def test_a_count_that_keeps_moving_is_waited_for_past_the_stall_window() -> None:
    """Ten arrivals, one per poll, take longer than the stall window but all arrive."""
    arrivals = _Arrivals(until=10)
    started = time.monotonic()
    reached = wait_for(lambda: 10, arrivals, time.monotonic() + 30, time.sleep, stall_s=0.2)
    assert reached
    assert arrivals() == 10
    assert time.monotonic() - started > 0.2  # longer than one stall window in all


def test_a_count_that_stops_short_is_a_stall() -> None:
    """Three of five arrive, then nothing: the wait gives up after the stall window."""
    arrivals = _Arrivals(until=3)
    reached = wait_for(lambda: 5, arrivals, time.monotonic() + 30, time.sleep, stall_s=0.2)
    assert not reached
    assert arrivals() == 3


def test_the_deadline_ends_a_wait_that_still_moves() -> None:
    """A count that moves too slowly for the deadline is not waited for beyond it."""
    arrivals = _Arrivals(until=1000, every=1)
    deadline = time.monotonic() + 0.3
    assert not wait_for(lambda: 1000, arrivals, deadline, time.sleep, stall_s=5.0)
    assert time.monotonic() >= deadline
