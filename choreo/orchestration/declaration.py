"""Orchestrated sagas declared in Python: the steps, their commands, replies and compensations.

An :class:`Orchestrator` is an ordinary :class:`~choreo.service.Service` whose handlers
consume the participants' replies and emit the next commands; its decorators declare the
saga's steps in order, in the same style as a service's handlers. Each decorated function
builds the command from the saga run so far (:class:`~choreo.orchestration.state.SagaRun`)
and is returned unchanged::

    orchestrator = Orchestrator("order-orchestrator", saga=OrderSaga, deadline=10.0)

    @orchestrator.step(sends=ReserveInventory, success=InventoryReserved,
                       failure=InventoryReservationFailed, parallel="hold")
    def reserve(run: SagaRun) -> ReserveInventory: ...

    @orchestrator.compensation(undoes=reserve, sends=ReleaseInventory,
                               success=InventoryReleased)
    def release(run: SagaRun) -> ReleaseInventory: ...

    @orchestrator.pivot(sends=DispatchShipment, success=ShipmentDispatched,
                        failure=ShipmentDispatchFailed)
    def dispatch(run: SagaRun) -> DispatchShipment: ...

    @orchestrator.completed
    def done(run: SagaRun) -> OrderCompleted: ...

    @orchestrator.failed
    def undone(run: SagaRun) -> OrderFailed: ...

Step classes are Richardson's, as in choreography: a :meth:`Orchestrator.step` is
compensatable (a compensation must undo it), the :meth:`Orchestrator.pivot` is the point
of no return, :meth:`Orchestrator.retriable` steps after it are re-sent at each deadline
until they succeed. Consecutive steps declared with the same ``parallel=`` name run at
once and the saga goes on when all of them succeeded. A compensation with
``undoes=<the Saga>`` undoes the saga's start (it is sent last).

:attr:`Orchestrator.service` is the orchestrator as an ordinary service (run it, test it,
draw it like any other); its handlers are built on first access, and declaring a step
afterwards is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from choreo.choreography.service import HandlerSpec, Saga, Service, StepKind
from choreo.errors import ConfigurationError
from choreo.model.envelope import Role
from choreo.model.events import Event, event_type_of
from choreo.orchestration.spec import (
    CompensationDef,
    CompensationOrder,
    CompensationPolicy,
    SagaPlan,
    StepDef,
)

if TYPE_CHECKING:
    from choreo.choreography.checks import Problem
    from choreo.choreography.graph import Choreography
    from choreo.orchestration.engine import Engine

__all__ = [
    "CompensationDef",
    "CompensationOrder",
    "CompensationPolicy",
    "Orchestrator",
    "OrchestratorService",
    "StepDef",
]

F = TypeVar("F", bound=Callable[..., Any])
EventTypes = type[Event] | Sequence[type[Event]]


class Orchestrator(SagaPlan):
    """The declaration of one orchestrated ``saga`` (see the module docs).

    ``name`` is the orchestrator's service name; ``deadline`` the default seconds a step
    (or a compensation) may take to reply; ``compensation`` the :class:`CompensationPolicy`.
    :attr:`service` is the orchestrator as an ordinary :class:`~choreo.service.Service`
    (what ``choreo run``, the testing kit, the graph and the tracker use); its events
    carry the saga's roles: commands ``command``, compensation commands ``compensate``,
    its step timeouts (``choreo.SagaTimedOut``) ``failure``, and the saga's
    completed/failed events.
    """

    def __init__(
        self,
        name: str,
        *,
        saga: Saga,
        deadline: float = 30.0,
        compensation: CompensationPolicy | None = None,
    ) -> None:
        super().__init__(name, saga=saga, deadline=deadline, compensation=compensation)
        self._service: OrchestratorService | None = None
        self._engine: Engine | None = None

    # --- declarations ----------------------------------------------------------------

    def step(
        self,
        *,
        sends: type[Event],
        success: EventTypes,
        failure: EventTypes = (),
        deadline: float | None = None,
        parallel: str | None = None,
    ) -> Callable[[F], F]:
        """Declare a compensatable step: the function builds the command ``sends``.

        Any of ``success`` means the step succeeded, any of ``failure`` that it failed (the
        saga compensates). A :meth:`compensation` must undo it.
        """
        return self._add(
            StepKind.COMPENSATABLE,
            sends=sends,
            success=success,
            failure=failure,
            deadline=deadline,
            parallel=parallel,
        )

    def pivot(
        self,
        *,
        sends: type[Event],
        success: EventTypes,
        failure: EventTypes = (),
        deadline: float | None = None,
    ) -> Callable[[F], F]:
        """Declare the pivot: the step after which nothing is undone."""
        return self._add(
            StepKind.PIVOT,
            sends=sends,
            success=success,
            failure=failure,
            deadline=deadline,
            parallel=None,
        )

    def retriable(
        self,
        *,
        sends: type[Event],
        success: EventTypes,
        deadline: float | None = None,
        parallel: str | None = None,
    ) -> Callable[[F], F]:
        """Declare a step after the pivot: re-sent at each deadline until it succeeds."""
        return self._add(
            StepKind.RETRIABLE,
            sends=sends,
            success=success,
            failure=(),
            deadline=deadline,
            parallel=parallel,
        )

    def compensation(
        self,
        *,
        undoes: Callable[..., Any] | Saga | str,
        sends: type[Event],
        success: EventTypes,
        deadline: float | None = None,
    ) -> Callable[[F], F]:
        """Declare the compensation of step ``undoes`` (its function or name, or the Saga).

        The function builds the command ``sends``; any of ``success`` means it was undone.
        """

        def decorator(func: F) -> F:
            self._check_open()
            name = _name_of(func, f"orchestrator {self.name} compensation")
            comp = CompensationDef(
                name=name,
                command=_one_type(sends, f"{name} sends"),
                success=_types(success, f"{name} success", required=True),
                build=func,
                deadline=_deadline(deadline, self.deadline, name),
            )
            if isinstance(undoes, Saga):
                if undoes.name != self.saga.name:
                    raise ConfigurationError(f"{name}: undoes saga {undoes.name}, not this one")
                if self.start_compensation is not None:
                    raise ConfigurationError(f"{name}: the start has a compensation already")
                self.start_compensation = comp
                return func
            target = undoes if isinstance(undoes, str) else getattr(undoes, "__name__", "")
            step = next((s for s in self.steps if s.name == target), None)
            if step is None:
                raise ConfigurationError(f"{name}: undoes={target!r} is no step declared before")
            if not step.compensatable:
                raise ConfigurationError(
                    f"{name}: step {step.name} is a {step.kind.value} step and cannot be undone"
                )
            if step.compensation is not None:
                raise ConfigurationError(f"{name}: step {step.name} has a compensation already")
            step.compensation = comp
            return func

        return decorator

    def completed(self, func: F) -> F:
        """Declare the function building the saga's completed event (from the run)."""
        self._check_open()
        self._completed = func
        return func

    def failed(self, func: F) -> F:
        """Declare the function building the saga's failed event (after every compensation)."""
        self._check_open()
        self._failed = func
        return func

    @property
    def engine(self) -> Engine:
        """Return the engine holding every saga's state (built with :attr:`service`)."""
        self.service  # noqa: B018 - builds the engine with the handlers
        assert self._engine is not None
        return self._engine

    @property
    def service(self) -> OrchestratorService:
        """Return the orchestrator as a service, its handlers built on first access.

        Raises :class:`~choreo.errors.ConfigurationError` for declarations that cannot
        run; no step may be declared afterwards.
        """
        if self._service is None:
            from choreo.orchestration.engine import Engine
            from choreo.orchestration.wiring import register_handlers

            _check_declarations(self)
            service = OrchestratorService(self)
            engine = Engine(self)
            service.roles, service.step_of_command = register_handlers(self, service, engine)
            self._engine, self._service = engine, service
        return self._service

    # --- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._service is not None:
            raise ConfigurationError(
                f"orchestrator {self.name} is in use already; declare every step first"
            )

    def _add(
        self,
        kind: StepKind,
        *,
        sends: type[Event],
        success: EventTypes,
        failure: EventTypes,
        deadline: float | None,
        parallel: str | None,
    ) -> Callable[[F], F]:
        def decorator(func: F) -> F:
            self._check_open()
            name = _name_of(func, f"orchestrator {self.name} step")
            if name in _RESERVED:
                raise ConfigurationError(f"orchestrator {self.name}: {name!r} is a reserved name")
            if any(s.name == name for s in self.steps):
                raise ConfigurationError(f"orchestrator {self.name}: two steps named {name}")
            last = self.steps[-1] if self.steps else None
            same_group = last is not None and parallel is not None and last.parallel == parallel
            group = (last.group if same_group else last.group + 1) if last is not None else 0
            if parallel is not None and kind is StepKind.PIVOT:
                raise ConfigurationError(f"{name}: the pivot runs alone, not in parallel")
            self.steps.append(
                StepDef(
                    name=name,
                    kind=kind,
                    command=_one_type(sends, f"{name} sends"),
                    success=_types(success, f"{name} success", required=True),
                    failure=_types(failure, f"{name} failure", required=False),
                    build=func,
                    deadline=_deadline(deadline, self.deadline, name),
                    group=group,
                    parallel=parallel,
                )
            )
            return func

        return decorator


class OrchestratorService(Service):
    """An orchestrator as a service: names its commands' roles and step headers."""

    state_in_log: ClassVar[bool] = True

    def __init__(self, orchestrator: Orchestrator) -> None:
        super().__init__(orchestrator.name, sagas=[orchestrator.saga])
        self.orchestrator = orchestrator
        self.roles: dict[str, Role] = {}
        self.step_of_command: dict[str, str] = {}

    def role_of(self, spec: HandlerSpec, event_type: str, saga_name: str | None = None) -> Role:
        """Return the role of an event the orchestrator emits (commands, timeouts, ends)."""
        role = self.roles.get(event_type)
        return role if role is not None else super().role_of(spec, event_type, saga_name)

    def step_header(self, spec: HandlerSpec, role: Role, event_type: str) -> str:
        """Name the orchestrated step (``orchestrator.step``) in a command's step header."""
        step = self.step_of_command.get(event_type)
        return self.orchestrator.step_id(step) if step is not None else spec.step_id

    def choreography_problems(self, choreography: Choreography) -> Iterator[Problem]:
        """Yield the orchestrated saga's problems (``choreo check`` calls it)."""
        from choreo.orchestration.check import problems

        return problems(choreography, self.orchestrator)


def _check_declarations(orch: Orchestrator) -> None:
    """Raise ConfigurationError for declarations that cannot run."""
    where = f"orchestrator {orch.name}"
    if not orch.steps:
        raise ConfigurationError(f"{where} declares no step")
    if orch._completed is None or orch._failed is None:
        raise ConfigurationError(f"{where} must declare @completed and @failed builders")
    seen: dict[str, str] = {}

    def claim(cls: type[Event], what: str) -> None:
        event_type = event_type_of(cls)
        if event_type in seen:
            raise ConfigurationError(
                f"{where}: {event_type} is used by both {seen[event_type]} and {what}; "
                "every command and reply belongs to one step"
            )
        seen[event_type] = what

    claim(orch.saga.start, "the saga's start")
    for step in orch.steps:
        for cls in (step.command, *step.success, *step.failure):
            claim(cls, f"step {step.name}")
        if step.compensation is not None:
            for cls in (step.compensation.command, *step.compensation.success):
                claim(cls, f"compensation {step.compensation.name}")
    if orch.start_compensation is not None:
        for cls in (orch.start_compensation.command, *orch.start_compensation.success):
            claim(cls, f"compensation {orch.start_compensation.name}")
    _check_pivot(orch, where)


def _check_pivot(orch: Orchestrator, where: str) -> None:
    """Raise ConfigurationError unless at most one pivot comes after every compensatable step."""
    pivots = [s for s in orch.steps if s.kind is StepKind.PIVOT]
    if len(pivots) > 1:
        raise ConfigurationError(f"{where} has more than one pivot")
    if pivots:
        index = orch.steps.index(pivots[0])
        for step in orch.steps[index + 1 :]:
            if step.kind is not StepKind.RETRIABLE:
                raise ConfigurationError(
                    f"{where}: step {step.name} comes after the pivot and must be retriable"
                )
        for step in orch.steps[:index]:
            if step.kind is StepKind.RETRIABLE:
                raise ConfigurationError(
                    f"{where}: retriable step {step.name} comes before the pivot"
                )


def _name_of(func: object, where: str) -> str:
    name = getattr(func, "__name__", None)
    if not callable(func) or not name:
        raise ConfigurationError(f"{where}: {func!r} is not a named function")
    return str(name)


def _deadline(given: float | None, default: float, name: str) -> float:
    value = default if given is None else given
    if value <= 0:
        raise ConfigurationError(f"{name}: deadline must be positive")
    return float(value)


def _one_type(value: object, what: str) -> type[Event]:
    if not (isinstance(value, type) and issubclass(value, Event)):
        raise ConfigurationError(f"{what}: {value!r} is not an Event class")
    event_type_of(value)
    return value


def _types(value: object, what: str, *, required: bool) -> tuple[type[Event], ...]:
    if isinstance(value, type):
        found: tuple[type[Event], ...] = (_one_type(value, what),)
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        found = tuple(_one_type(item, what) for item in value)
    else:
        raise ConfigurationError(f"{what}: {value!r} is not an Event class or a list of them")
    if required and not found:
        raise ConfigurationError(f"{what}: name at least one reply")
    return found


_RESERVED = frozenset({"start", "begin", "deadline"})
