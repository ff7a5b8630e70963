"""What an :class:`~choreo.app.App` is made of: its members, its settings, where it runs.

Shared by :mod:`choreo.app.app` (which validates and builds them) and
:mod:`choreo.app.running` (which starts them), so neither imports the other's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError
from choreo.runtime.config import WorkerConfig

if TYPE_CHECKING:
    from choreo.orchestration import Orchestrator
    from choreo.store.base import Store
    from choreo.transports.config import KafkaConfig
    from choreo.transports.memory import MemoryBus

__all__ = ["Member", "StoreFactory", "Target", "Wiring", "find_starter", "member_of"]

StoreFactory = Callable[[str], "Store"]
"""Returns the store of the service it is given the name of."""


@dataclass(frozen=True, slots=True)
class Member:
    """One service of the application, and its orchestrator when it is one."""

    service: Service
    orchestrator: Orchestrator | None = None

    @property
    def runs_worker(self) -> bool:
        """True when the service consumes events (so it needs a worker)."""
        return self.orchestrator is not None or bool(self.service.consumed_types)


def member_of(item: Service | Orchestrator) -> Member:
    """Return the member for a Service, an orchestrator's service or an Orchestrator."""
    service = getattr(item, "service", None)
    if not isinstance(item, Service) and isinstance(service, Service):  # an Orchestrator
        return Member(service, getattr(service, "orchestrator", None))
    if isinstance(item, Service):
        return Member(item, getattr(item, "orchestrator", None))
    raise ConfigurationError(f"{item!r} is not a choreo Service or Orchestrator")


@dataclass(frozen=True, slots=True)
class Wiring:
    """The settings of an :class:`~choreo.app.App` (see its docstring), validated."""

    members: tuple[Member, ...]
    schemas: Path | None
    registry: Any
    store: str | StoreFactory | None
    config: WorkerConfig | None
    """None: the default WorkerConfig (polling every 0.2 s on the in-memory bus)."""
    topic_prefix: str = ""
    sagas: tuple[Saga, ...] = field(default=())
    track: bool = True
    deadline: float | None = None
    timeouts: bool = False

    @property
    def services(self) -> list[Service]:
        """Return the services, in the order given."""
        return [m.service for m in self.members]


@dataclass(frozen=True, slots=True)
class Target:
    """Where an :class:`~choreo.app.AppRun` runs: the kind of transport and how to reach it."""

    kind: str
    bootstrap: str | None = None
    kafka: KafkaConfig | None = None
    bus: MemoryBus | None = None
    partitions: int = 1
    workers: bool = True


def find_starter(
    services: list[Service], service: Service | str | None, saga: Saga | None
) -> Service:
    """Return the service of ``services`` named by ``service``, or the one starting ``saga``.

    Without ``saga`` either: the only service that starts any saga. Raises
    ConfigurationError saying how to name one when there is none, or more than one.
    """
    if service is not None:
        name = service if isinstance(service, str) else service.name
        for candidate in services:
            if candidate.name == name:
                return candidate
        raise ConfigurationError(f"the App has no service named {name!r}")
    starters = [
        s
        for s in services
        if s.started_sagas and (saga is None or saga.name in {x.name for x in s.started_sagas})
    ]
    if len(starters) != 1:
        what = f"saga {saga.name}" if saga is not None else "a saga"
        raise ConfigurationError(
            f"{len(starters)} services of the App start {what}: declare it with "
            "service.starts(saga), or pass service="
        )
    return starters[0]
