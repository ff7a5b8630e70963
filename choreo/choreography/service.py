"""Services and their decorated handlers: the declarations a choreography is built from.

A :class:`Service` is a plain object; its decorators register a handler and return the
function unchanged, so a handler stays a plain function that a unit test can call.
A handler takes the incoming event and, when it asks for it, the
:class:`~choreo.model.context.Context`: a second parameter named ``ctx`` (or ``context``) or
annotated ``Context`` (see :mod:`choreo.choreography.signature`; a signature that does not
say clearly is refused when declared). It may be ``async def`` (the worker awaits it). It
returns the events it emits: one event, a sequence of events, or ``None``. Emitted events
inherit the correlation id, saga and trace context of the incoming event; the runtime sets
the causation id. Nothing here touches Kafka: tuning belongs to the transport's
configuration.

Step classes follow Richardson: a :meth:`Service.step` is *compensatable* and must have a
:meth:`Service.compensation`; a :meth:`Service.pivot` is the point of no return; a
:meth:`Service.retriable` step comes after the pivot and must eventually succeed. A
:meth:`Service.listener` reacts without taking part in the saga (its events are notices).

Example::

    fulfilment = Saga("OrderFulfillment", start=OrderCreated,
                      completed=[OrderCompleted], failed=[OrderFailed])
    inventory = Service("inventory", sagas=[fulfilment])

    @inventory.step(on=OrderCreated, emits=InventoryReserved,
                    fails_with=InventoryReservationFailed)
    def reserve(event: OrderCreated, ctx: Context) -> InventoryReserved: ...

    @inventory.compensation(undoes=reserve, on=[PaymentDeclined, PaymentRefunded],
                            emits=InventoryReleased)
    def release(event: PaymentDeclined | PaymentRefunded) -> InventoryReleased: ...

Why one module of over 500 lines: it is the declaration API a user reads (``Service``,
``Saga``, the decorators and their validation), and splitting the decorators from the
classes they register on would make a reader hold two files for one concept.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from choreo.choreography.signature import read_handler
from choreo.errors import ConfigurationError
from choreo.model.envelope import Role
from choreo.model.events import Event, event_type_of

__all__ = [
    "HandlerSpec",
    "Retry",
    "Saga",
    "Service",
    "StepKind",
]

F = TypeVar("F", bound=Callable[..., Any])
EventTypes = type[Event] | Sequence[type[Event]]


class StepKind(enum.StrEnum):
    """What kind of handler a declaration registers."""

    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"
    COMPENSATION = "compensation"
    LISTENER = "listener"
    ORCHESTRATION = "orchestration"
    """A handler of an orchestrator: it consumes replies and sends commands."""

    @property
    def is_forward(self) -> bool:
        """True for the forward steps (compensatable, pivot, retriable)."""
        return self in (StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE)


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a handler is retried on a transient error.

    The n-th retry waits ``min(max_backoff, backoff * multiplier ** (n - 1))`` seconds,
    scaled by a random factor in [0.5, 1.0] when ``jitter`` is set.
    """

    max_attempts: int = 5
    backoff: float = 0.05
    multiplier: float = 2.0
    max_backoff: float = 5.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("Retry.max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ConfigurationError("Retry backoff must be >= 0 and multiplier >= 1")

    def delay(self, retry_number: int) -> float:
        """Return the un-jittered wait in seconds before the ``retry_number``-th retry (1-based)."""
        return float(min(self.max_backoff, self.backoff * self.multiplier ** (retry_number - 1)))


@dataclass(frozen=True, slots=True)
class Saga:
    """A saga type: the event that opens it and the events that end it.

    ``deadline`` is the default number of seconds a saga may wait for its next event
    before the tracker calls it stuck (a step may declare its own).
    """

    name: str
    start: type[Event]
    completed: tuple[type[Event], ...] = ()
    failed: tuple[type[Event], ...] = ()
    deadline: float | None = None

    def __init__(
        self,
        name: str,
        *,
        start: type[Event],
        completed: EventTypes = (),
        failed: EventTypes = (),
        deadline: float | None = None,
    ) -> None:
        if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ConfigurationError(f"saga name {name!r} must be a non-empty identifier")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "start", _check_event_class(start, f"saga {name} start"))
        object.__setattr__(self, "completed", _as_types(completed, f"saga {name} completed"))
        object.__setattr__(self, "failed", _as_types(failed, f"saga {name} failed"))
        object.__setattr__(self, "deadline", deadline)
        if not self.completed:
            raise ConfigurationError(f"saga {name} declares no completed event")
        if not self.failed:
            raise ConfigurationError(f"saga {name} declares no failed event")

    def terminal_role(self, event_type: str) -> Role | None:
        """Return START, COMPLETED or FAILED if this saga declares ``event_type`` so, else None."""
        if event_type == event_type_of(self.start):
            return Role.START
        if any(event_type == event_type_of(t) for t in self.completed):
            return Role.COMPLETED
        if any(event_type == event_type_of(t) for t in self.failed):
            return Role.FAILED
        return None


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler and everything declared about it."""

    service: str
    name: str
    func: Callable[..., Any] = field(repr=False, compare=False)
    kind: StepKind
    consumes: tuple[type[Event], ...]
    emits: tuple[type[Event], ...] = ()
    fails_with: tuple[type[Event], ...] = ()
    undoes: str | None = None
    deadline: float | None = None
    retry: Retry | None = None
    takes_context: bool = True
    is_async: bool = False

    @property
    def step_id(self) -> str:
        """Return the step's identifier, ``service.handler``, carried in the step header."""
        return f"{self.service}.{self.name}"

    @property
    def consumed_types(self) -> tuple[str, ...]:
        """Return the event types (Avro full names) this handler reacts to."""
        return tuple(event_type_of(t) for t in self.consumes)

    @property
    def success_types(self) -> tuple[str, ...]:
        """Return the event types this handler emits when it succeeds (not its failures)."""
        return tuple(event_type_of(t) for t in self.emits)

    @property
    def emitted_types(self) -> tuple[str, ...]:
        """Return every event type this handler may emit, successes then failures."""
        return tuple(event_type_of(t) for t in (*self.emits, *self.fails_with))

    def role_of(self, event_type: str) -> Role:
        """Return the role of an event of ``event_type`` emitted by this handler.

        A saga's own declaration (start/completed/failed) is decided by the caller;
        this gives the role the handler's kind implies.
        """
        if self.kind is StepKind.LISTENER:
            return Role.NOTICE
        if self.kind is StepKind.COMPENSATION:
            return Role.COMPENSATION
        if any(event_type == event_type_of(t) for t in self.fails_with):
            return Role.FAILURE
        return Role.STEP

    def step_header(self, role: Role) -> str:
        """Return the step header value for an event of ``role`` emitted by this handler.

        A compensation names the step it undid; every other event names this handler.
        """
        if role in (Role.COMPENSATION, Role.FAILED) and self.undoes is not None:
            return self.undoes
        return self.step_id

    def invoke(self, event: Event, ctx: Any) -> list[Event]:
        """Call the handler and return the events it emitted, as a list.

        Events emitted through ``ctx.emit`` are the context's business; this only
        normalises the return value (``None``, one event, or a sequence of events). An
        ``async def`` handler is run to completion on a new event loop (the worker keeps
        one loop per thread instead: :mod:`choreo.runtime.aio`).
        """
        result = self.func(event, ctx) if self.takes_context else self.func(event)
        if self.is_async:
            result = asyncio.run(result)
        if result is None:
            return []
        if isinstance(result, Event):
            return [result]
        if isinstance(result, (list, tuple)):
            for item in result:
                if not isinstance(item, Event):
                    raise TypeError(
                        f"handler {self.step_id} returned {type(item).__qualname__}, not an Event"
                    )
            return list(result)
        raise TypeError(
            f"handler {self.step_id} returned {type(result).__qualname__}; "
            "return an Event, a list of Events or None"
        )


class Service:
    """A named service: a set of handlers and the sagas it takes part in.

    Decorators register a handler and return the function unchanged. A service reacts to
    each event type with at most one handler. ``migrations`` (see
    :class:`choreo.store.Migration`) create and evolve the service's own tables; the
    worker applies the new ones to its store at start, once, however many replicas start.
    """

    state_in_log: ClassVar[bool] = False
    """True when the service's state is rebuilt from the log (an orchestrator): each
    replica may then keep an unshared store of its own."""

    def __init__(
        self, name: str, *, sagas: Iterable[Saga] = (), migrations: Sequence[Any] = ()
    ) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigurationError(f"service name {name!r} must be a non-empty identifier")
        self.name = name
        self.migrations: tuple[Any, ...] = tuple(migrations)
        self._sagas: dict[str, Saga] = {}
        self._starts: dict[str, Saga] = {}
        self._handlers: dict[str, HandlerSpec] = {}
        self._by_event: dict[str, HandlerSpec] = {}
        for saga in sagas:
            self.joins(saga)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, handlers={sorted(self._handlers)})"

    # --- sagas -----------------------------------------------------------------------

    def joins(self, saga: Saga) -> Saga:
        """Declare that this service takes part in ``saga`` (to know its terminal events)."""
        known = self._sagas.get(saga.name)
        if known is not None and known != saga:
            raise ConfigurationError(f"service {self.name}: two different sagas named {saga.name}")
        self._sagas[saga.name] = saga
        return saga

    def starts(self, saga: Saga) -> Saga:
        """Declare that this service opens ``saga`` by publishing its start event."""
        self.joins(saga)
        self._starts[saga.name] = saga
        return saga

    def start_step_id(self, saga: Saga) -> str:
        """Return the step id of this service's start of ``saga`` (``service.start``)."""
        return f"{self.name}.start"

    @property
    def sagas(self) -> tuple[Saga, ...]:
        """Return the sagas this service takes part in."""
        return tuple(self._sagas.values())

    @property
    def started_sagas(self) -> tuple[Saga, ...]:
        """Return the sagas this service opens."""
        return tuple(self._starts.values())

    # --- handlers --------------------------------------------------------------------

    @property
    def handlers(self) -> tuple[HandlerSpec, ...]:
        """Return the registered handlers in registration order."""
        return tuple(self._handlers.values())

    def handler_for(self, event_type: str) -> HandlerSpec | None:
        """Return the handler reacting to ``event_type``, or None."""
        return self._by_event.get(event_type)

    @property
    def consumed_types(self) -> tuple[str, ...]:
        """Return every event type this service reacts to."""
        return tuple(self._by_event)

    def role_of(self, spec: HandlerSpec, event_type: str, saga_name: str | None = None) -> Role:
        """Return the role of ``event_type`` emitted by ``spec`` in ``saga_name``.

        A saga's declaration wins: an event a saga declares completed or failed is
        terminal whoever emits it. Otherwise the handler's kind decides.
        """
        sagas = [self._sagas[saga_name]] if saga_name in self._sagas else list(self._sagas.values())
        for saga in sagas:
            role = saga.terminal_role(event_type)
            if role in (Role.COMPLETED, Role.FAILED):
                return role
        return spec.role_of(event_type)

    def step_header(self, spec: HandlerSpec, role: Role, event_type: str) -> str:
        """Return the step header of an ``event_type`` event of ``role`` emitted by ``spec``.

        By default the handler decides (:meth:`HandlerSpec.step_header`); an orchestrator
        names the orchestrated step its commands belong to.
        """
        return spec.step_header(role)

    def step(
        self,
        on: EventTypes,
        *,
        emits: EventTypes = (),
        fails_with: EventTypes = (),
        deadline: float | None = None,
        retry: Retry | None = None,
    ) -> Callable[[F], F]:
        """Register a compensatable forward step reacting to ``on``.

        It emits one of ``emits`` on success or one of ``fails_with`` on a business
        failure (return it, or raise :class:`~choreo.errors.BusinessFailure`). A
        :meth:`compensation` must declare ``undoes=`` this step.
        """
        return self._register(
            StepKind.COMPENSATABLE,
            on=on,
            emits=emits,
            fails_with=fails_with,
            undoes=None,
            deadline=deadline,
            retry=retry,
        )

    def pivot(
        self,
        on: EventTypes,
        *,
        emits: EventTypes = (),
        fails_with: EventTypes = (),
        deadline: float | None = None,
        retry: Retry | None = None,
    ) -> Callable[[F], F]:
        """Register the saga's pivot: a forward step that cannot be compensated."""
        return self._register(
            StepKind.PIVOT,
            on=on,
            emits=emits,
            fails_with=fails_with,
            undoes=None,
            deadline=deadline,
            retry=retry,
        )

    def retriable(
        self,
        on: EventTypes,
        *,
        emits: EventTypes = (),
        deadline: float | None = None,
        retry: Retry | None = None,
    ) -> Callable[[F], F]:
        """Register a step after the pivot that is retried until it succeeds (no failure event)."""
        return self._register(
            StepKind.RETRIABLE,
            on=on,
            emits=emits,
            fails_with=(),
            undoes=None,
            deadline=deadline,
            retry=retry,
        )

    def compensation(
        self,
        *,
        undoes: Callable[..., Any] | Saga | str,
        on: EventTypes,
        emits: EventTypes = (),
        deadline: float | None = None,
        retry: Retry | None = None,
    ) -> Callable[[F], F]:
        """Register the compensation that undoes step ``undoes`` of this service.

        ``undoes`` is the step's handler function (or its step id); a :class:`Saga` that
        this service :meth:`starts` means the saga's start. The compensation reacts to
        ``on`` (failure events or later compensations) and emits ``emits``.
        """
        return self._register(
            StepKind.COMPENSATION,
            on=on,
            emits=emits,
            fails_with=(),
            undoes=undoes,
            deadline=deadline,
            retry=retry,
        )

    def listener(self, on: EventTypes, *, emits: EventTypes = ()) -> Callable[[F], F]:
        """Register a handler that reacts without taking part in the saga (emits notices)."""
        return self._register(
            StepKind.LISTENER,
            on=on,
            emits=emits,
            fails_with=(),
            undoes=None,
            deadline=None,
            retry=None,
        )

    # --- internals -------------------------------------------------------------------

    def _undone_step_id(self, undoes: Callable[..., Any] | Saga | str, where: str) -> str:
        if isinstance(undoes, Saga):
            self.starts(undoes)
            return self.start_step_id(undoes)
        if isinstance(undoes, str):
            if not undoes:
                raise ConfigurationError(f"{where}: undoes= names no step")
            return undoes if "." in undoes else f"{self.name}.{undoes}"
        for spec in self._handlers.values():
            if spec.func is undoes:
                return spec.step_id
        name = getattr(undoes, "__name__", None)
        if name is None or not callable(undoes):
            raise ConfigurationError(f"{where}: undoes={undoes!r} is not a step")
        return f"{self.name}.{name}"

    def _register(
        self,
        kind: StepKind,
        *,
        on: EventTypes,
        emits: EventTypes,
        fails_with: EventTypes,
        undoes: Callable[..., Any] | Saga | str | None,
        deadline: float | None,
        retry: Retry | None,
    ) -> Callable[[F], F]:
        # Declarations are checked when the function is known, so messages name the handler.
        def decorator(func: F) -> F:
            name = getattr(func, "__name__", None)
            if not callable(func) or not name:
                raise ConfigurationError(f"service {self.name}: {func!r} is not a named function")
            where = f"service {self.name} handler {name}"
            consumes = _as_types(on, f"{where} 'on'")
            if not consumes:
                raise ConfigurationError(f"{where}: a handler must react to an event")
            emitted = _as_types(emits, f"{where} 'emits'")
            failures = _as_types(fails_with, f"{where} 'fails_with'")
            if deadline is not None and deadline <= 0:
                raise ConfigurationError(f"{where}: deadline must be positive")
            if name in self._handlers:
                raise ConfigurationError(f"service {self.name}: two handlers named {name}")
            undone = None if undoes is None else self._undone_step_id(undoes, where)
            shape = read_handler(func, where)
            spec = HandlerSpec(
                service=self.name,
                name=name,
                func=func,
                kind=kind,
                consumes=consumes,
                emits=emitted,
                fails_with=failures,
                undoes=undone,
                deadline=deadline,
                retry=retry,
                takes_context=shape.takes_context,
                is_async=shape.is_async,
            )
            for event_type in spec.consumed_types:
                other = self._by_event.get(event_type)
                if other is not None:
                    raise ConfigurationError(
                        f"service {self.name}: {event_type} is handled by both "
                        f"{other.name} and {name}; one handler per event type"
                    )
            self._handlers[name] = spec
            for event_type in spec.consumed_types:
                self._by_event[event_type] = spec
            return func

        return decorator


def _check_event_class(cls: object, what: str) -> type[Event]:
    if not (isinstance(cls, type) and issubclass(cls, Event)):
        raise ConfigurationError(f"{what}: {cls!r} is not an Event class")
    try:
        event_type_of(cls)
    except TypeError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    return cls


def _as_types(value: object, what: str) -> tuple[type[Event], ...]:
    if value is None:
        return ()
    if isinstance(value, type):
        return (_check_event_class(value, what),)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{what}: {value!r} is not an Event class or a list of them")
    return tuple(_check_event_class(item, what) for item in value)
