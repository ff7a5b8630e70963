"""Fixtures of the orchestration tests: the example orchestrator, scripted participants, a kit."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from participants import SCHEMAS_DIR, Script, build

from choreo.orchestration import Orchestrator
from choreo.orchestration.declaration import CompensationPolicy
from choreo.orchestration.testing import OrchestrationTestKit
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record
from services import orchestrated

DEADLINE = 5.0
"""The orchestrator's step deadline in these tests (virtual seconds)."""

MakeKit = Callable[..., tuple[OrchestrationTestKit, Orchestrator, Script]]


@pytest.fixture
def make_kit() -> Iterator[MakeKit]:
    """Return a factory of (kit, orchestrator, script); every kit made is closed afterwards."""
    made: list[OrchestrationTestKit] = []

    def make(
        script: Script | None = None, *, attempts: int = 3
    ) -> tuple[OrchestrationTestKit, Orchestrator, Script]:
        script = script or Script()
        orch = orchestrated.create(
            deadline=DEADLINE, compensation=CompensationPolicy(attempts=attempts)
        )
        kit = OrchestrationTestKit([orch, *build(script)], schemas_dir=SCHEMAS_DIR)
        made.append(kit)
        return kit, orch, script

    yield make
    for kit in made:
        kit.close()


def track(kit: OrchestrationTestKit, orch: Orchestrator) -> Tracker:
    """Return a tracker fed with every record the kit saw published (dead letters included)."""
    tracker = Tracker(choreography=[s for s in kit.services])
    for offset, record in enumerate(kit.published):
        tracker.feed(Record(record.topic, 0, offset, record.key, record.value, record.headers))
    return tracker
