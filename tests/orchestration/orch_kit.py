"""Helpers of the orchestration tests: the kit factory's type and a tracker over a kit's log."""

from __future__ import annotations

from collections.abc import Callable

from orch_participants import Script

from choreo.orchestration import Orchestrator
from choreo.orchestration.testing import OrchestrationTestKit
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record

DEADLINE = 5.0
"""The orchestrator's step deadline in these tests (virtual seconds)."""

MakeKit = Callable[..., tuple[OrchestrationTestKit, Orchestrator, Script]]


def track(kit: OrchestrationTestKit, orch: Orchestrator) -> Tracker:
    """Return a tracker fed with every record the kit saw published (dead letters included)."""
    tracker = Tracker(choreography=list(kit.services))
    for offset, record in enumerate(kit.published):
        tracker.feed(Record(record.topic, 0, offset, record.key, record.value, record.headers))
    return tracker
