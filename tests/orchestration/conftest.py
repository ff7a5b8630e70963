"""Fixtures of the orchestration tests: the example orchestrator, scripted participants, a kit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from orch_kit import DEADLINE, MakeKit
from orch_participants import SCHEMAS_DIR, Script, build

from choreo.orchestration import Orchestrator
from choreo.orchestration.declaration import CompensationPolicy
from choreo.testing import SagaTestKit
from services import orchestrated


@pytest.fixture
def make_kit() -> Iterator[MakeKit]:
    """Return a factory of (kit, orchestrator, script); every kit made is closed afterwards."""
    made: list[SagaTestKit] = []

    def make(
        script: Script | None = None, *, attempts: int = 3
    ) -> tuple[SagaTestKit, Orchestrator, Script]:
        script = script or Script()
        orch = orchestrated.create(
            deadline=DEADLINE, compensation=CompensationPolicy(attempts=attempts)
        )
        kit = SagaTestKit([orch, *build(script)], schemas_dir=SCHEMAS_DIR)
        made.append(kit)
        return kit, orch, script

    yield make
    for kit in made:
        kit.close()
