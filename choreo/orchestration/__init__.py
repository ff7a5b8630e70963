"""Orchestrated sagas on choreo's primitives: an orchestrator is an ordinary service.

Declare the saga's steps in order on an :class:`Orchestrator` (commands, success and
failure replies, compensations, deadlines, pivot, retriable and parallel steps); run it
with :class:`OrchestratorRunner` (or ``choreo run``). Its state per saga is the fold of the
events it sent and received, rebuilt from Kafka at start: there is no saga database.
Participants are ordinary services whose handlers react to a command and return the
reply. See ``docs/orchestration.md``.
"""

from choreo.orchestration.declaration import (
    CompensationOrder,
    CompensationPolicy,
    Orchestrator,
)
from choreo.orchestration.events import DeadlinePassed, SagaCompensationFailed
from choreo.orchestration.runner import OrchestratorRunner
from choreo.orchestration.state import Outcome, Phase, SagaRun

__all__ = [
    "CompensationOrder",
    "CompensationPolicy",
    "DeadlinePassed",
    "Orchestrator",
    "OrchestratorRunner",
    "Outcome",
    "Phase",
    "SagaCompensationFailed",
    "SagaRun",
]
