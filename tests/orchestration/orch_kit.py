"""Helpers of the orchestration tests: the kit factory's type and the kit's tracker."""

from __future__ import annotations

from collections.abc import Callable

from orch_participants import Script

from choreo.orchestration import Orchestrator
from choreo.testing import SagaTestKit
from choreo.tracker.tracker import Tracker

DEADLINE = 5.0
"""The orchestrator's step deadline in these tests (virtual seconds)."""

MakeKit = Callable[..., tuple[SagaTestKit, Orchestrator, Script]]


def track(kit: SagaTestKit, orch: Orchestrator) -> Tracker:
    """Return the kit's tracker, fed with every record it saw published (dead letters too)."""
    return kit.tracker()
