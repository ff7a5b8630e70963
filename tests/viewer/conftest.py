"""Fixtures for the viewer tests: a real Tracker fed with the sample sagas, and a running server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from choreo.tracker.tracker import Tracker
from choreo.viewer import ViewerServer

from .samples import Sample, feed_sample, new_tracker


@pytest.fixture
def tracker() -> Tracker:
    """Return an empty tracker that decodes JSON payloads."""
    return new_tracker()


@pytest.fixture
def sample(tracker: Tracker) -> Sample:
    """Feed the sample sagas into ``tracker`` and describe them."""
    return feed_sample(tracker)


@pytest.fixture
def server(tracker: Tracker, sample: Sample) -> Iterator[ViewerServer]:
    """Serve ``tracker`` (with the sample fed) on a free loopback port."""
    viewer = ViewerServer(tracker, port=0).start()
    try:
        yield viewer
    finally:
        viewer.stop()
