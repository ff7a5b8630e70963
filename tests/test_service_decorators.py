"""Tests of the decorator API: Service, Saga, HandlerSpec, StepKind and Retry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from choreo.choreography.service import HandlerSpec, Retry, Saga, Service, StepKind
from choreo.errors import ConfigurationError
from choreo.model.context import Context
from choreo.model.envelope import Envelope, Role
from choreo.model.events import Event


@dataclass(frozen=True)
class Placed(Event):
    """Opens the saga."""

    __avro_name__: ClassVar[str] = "test.deco.Placed"
    order_id: str = "o-1"


@dataclass(frozen=True)
class Reserved(Event):
    """A forward step succeeded."""

    __avro_name__: ClassVar[str] = "test.deco.Reserved"
    order_id: str = "o-1"


@dataclass(frozen=True)
class OutOfStock(Event):
    """A forward step failed."""

    __avro_name__: ClassVar[str] = "test.deco.OutOfStock"


@dataclass(frozen=True)
class Released(Event):
    """A step was undone."""

    __avro_name__: ClassVar[str] = "test.deco.Released"


@dataclass(frozen=True)
class Done(Event):
    """Terminal success."""

    __avro_name__: ClassVar[str] = "test.deco.Done"


@dataclass(frozen=True)
class Failed(Event):
    """Terminal failure."""

    __avro_name__: ClassVar[str] = "test.deco.Failed"


@dataclass(frozen=True)
class Noted(Event):
    """A notice."""

    __avro_name__: ClassVar[str] = "test.deco.Noted"


@dataclass(frozen=True)
class Nameless(Event):
    """An event class that forgot its Avro name."""


def make_saga() -> Saga:
    """Return the saga used by most tests."""
    return Saga("Checkout", start=Placed, completed=[Done], failed=Failed)


def context_for(event_type: str = "test.deco.Placed") -> Context:
    """Return a handler context for an incoming event of ``event_type``."""
    return Context(Envelope.start(event_type, saga="Checkout", service="shop"), service="shop")


# --- registration ----------------------------------------------------------------------


def test_decorator_returns_the_function_unchanged() -> None:
    """A decorated handler is the very function, still callable in a unit test."""
    shop = Service("shop")

    def reserve(event: Placed) -> Reserved:
        return Reserved(order_id=event.order_id)

    decorated = shop.step(on=Placed, emits=Reserved, fails_with=OutOfStock)(reserve)
    assert decorated is reserve
    assert reserve(Placed(order_id="o-9")) == Reserved(order_id="o-9")


def test_registration_records_the_declaration() -> None:
    """The handler spec keeps kind, consumed, emitted and failure types and the step id."""
    shop = Service("shop")

    @shop.step(on=Placed, emits=Reserved, fails_with=OutOfStock, deadline=3.0)
    def reserve(event: Placed, ctx: Context) -> Reserved:
        return Reserved()

    (spec,) = shop.handlers
    assert spec.kind is StepKind.COMPENSATABLE
    assert spec.step_id == "shop.reserve"
    assert spec.consumed_types == ("test.deco.Placed",)
    assert spec.emitted_types == ("test.deco.Reserved", "test.deco.OutOfStock")
    assert spec.deadline == 3.0
    assert spec.takes_context is True
    assert shop.handler_for("test.deco.Placed") is spec
    assert shop.handler_for("test.deco.Reserved") is None
    assert shop.consumed_types == ("test.deco.Placed",)


@pytest.mark.parametrize(
    ("decorate", "kind"),
    [
        (lambda s: s.step(on=Placed), StepKind.COMPENSATABLE),
        (lambda s: s.pivot(on=Placed), StepKind.PIVOT),
        (lambda s: s.retriable(on=Placed), StepKind.RETRIABLE),
        (lambda s: s.compensation(undoes="other", on=Placed), StepKind.COMPENSATION),
        (lambda s: s.listener(on=Placed), StepKind.LISTENER),
    ],
)
def test_each_decorator_registers_its_kind(decorate: object, kind: StepKind) -> None:
    """Each decorator registers a handler of its own step kind."""
    shop = Service("shop")

    def handler(event: Placed) -> None:
        return None

    decorate(shop)(handler)  # type: ignore[operator]
    assert shop.handlers[0].kind is kind
    assert kind.is_forward == (kind in (StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE))


def test_one_handler_per_event_type_per_service() -> None:
    """A second handler for the same event type in one service is refused, naming both."""
    shop = Service("shop")

    @shop.step(on=Placed, emits=Reserved)
    def reserve(event: Placed) -> Reserved:
        return Reserved()

    def audit(event: Placed) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"shop.*test\.deco\.Placed.*reserve and audit"):
        shop.listener(on=[Noted, Placed])(audit)
    assert [h.name for h in shop.handlers] == ["reserve"]
    assert shop.handler_for("test.deco.Noted") is None


def test_two_services_may_handle_the_same_event() -> None:
    """The one-handler rule is per service: another service may react to the same event."""
    shop, audit = Service("shop"), Service("audit")

    def on_placed(event: Placed) -> None:
        return None

    shop.listener(on=Placed)(on_placed)
    audit.listener(on=Placed)(on_placed)
    assert shop.handlers[0].step_id == "shop.on_placed"
    assert audit.handlers[0].step_id == "audit.on_placed"


def test_two_handlers_with_one_name_are_refused() -> None:
    """Handler names are step ids, so a service cannot register two with the same name."""
    shop = Service("shop")

    def reserve(event: Placed) -> None:
        return None

    shop.step(on=Placed)(reserve)
    with pytest.raises(ConfigurationError, match="service shop: two handlers named reserve"):
        shop.step(on=Reserved)(reserve)


# --- roles -------------------------------------------------------------------------------


def test_roles_follow_the_handler_kind() -> None:
    """Successes are steps, fails_with are failures, compensations and notices by kind."""
    saga = make_saga()
    shop = Service("shop", sagas=[saga])

    @shop.step(on=Placed, emits=Reserved, fails_with=OutOfStock)
    def reserve(event: Placed) -> Reserved:
        return Reserved()

    @shop.compensation(undoes=reserve, on=OutOfStock, emits=Released)
    def release(event: OutOfStock) -> Released:
        return Released()

    @shop.listener(on=Released, emits=Noted)
    def note(event: Released) -> Noted:
        return Noted()

    step, comp, listener = shop.handlers
    assert shop.role_of(step, "test.deco.Reserved") is Role.STEP
    assert shop.role_of(step, "test.deco.OutOfStock") is Role.FAILURE
    assert shop.role_of(comp, "test.deco.Released") is Role.COMPENSATION
    assert shop.role_of(listener, "test.deco.Noted") is Role.NOTICE


def test_saga_declaration_wins_for_terminal_events() -> None:
    """An event the saga declares completed or failed is terminal whoever emits it."""
    saga = make_saga()
    shop = Service("shop", sagas=[saga])

    @shop.retriable(on=Reserved, emits=Done)
    def finish(event: Reserved) -> Done:
        return Done()

    @shop.compensation(undoes=saga, on=OutOfStock, emits=Failed)
    def fail(event: OutOfStock) -> Failed:
        return Failed()

    finish_spec, fail_spec = shop.handlers
    assert shop.role_of(finish_spec, "test.deco.Done") is Role.COMPLETED
    assert shop.role_of(finish_spec, "test.deco.Done", "Checkout") is Role.COMPLETED
    assert shop.role_of(fail_spec, "test.deco.Failed") is Role.FAILED
    # the handler alone does not know the saga: its kind decides
    assert finish_spec.role_of("test.deco.Done") is Role.STEP
    assert fail_spec.role_of("test.deco.Failed") is Role.COMPENSATION


def test_terminal_role_is_unknown_to_a_service_outside_the_saga() -> None:
    """A service that does not join the saga cannot tell its completed event is terminal."""
    shop = Service("shop")

    @shop.retriable(on=Reserved, emits=Done)
    def finish(event: Reserved) -> Done:
        return Done()

    assert shop.role_of(shop.handlers[0], "test.deco.Done") is Role.STEP


def test_saga_terminal_role() -> None:
    """A saga names the role of its start, completed and failed events, and no others."""
    saga = make_saga()
    assert saga.terminal_role("test.deco.Placed") is Role.START
    assert saga.terminal_role("test.deco.Done") is Role.COMPLETED
    assert saga.terminal_role("test.deco.Failed") is Role.FAILED
    assert saga.terminal_role("test.deco.Reserved") is None
    assert saga.completed == (Done,)
    assert saga.failed == (Failed,)


# --- undoes ----------------------------------------------------------------------------


def test_undoes_a_registered_function() -> None:
    """``undoes=`` a registered handler function names that handler's step id."""
    shop = Service("shop")

    @shop.step(on=Placed, emits=Reserved)
    def reserve(event: Placed) -> Reserved:
        return Reserved()

    @shop.compensation(undoes=reserve, on=OutOfStock, emits=Released)
    def release(event: OutOfStock) -> Released:
        return Released()

    comp = shop.handlers[1]
    assert comp.undoes == "shop.reserve"
    assert comp.step_header(Role.COMPENSATION) == "shop.reserve"
    assert comp.step_header(Role.FAILED) == "shop.reserve"
    assert shop.handlers[0].step_header(Role.STEP) == "shop.reserve"


def test_undoes_a_function_registered_later() -> None:
    """A compensation declared before its step names the step by function name."""
    shop = Service("shop")

    def reserve(event: Placed) -> Reserved:
        return Reserved()

    @shop.compensation(undoes=reserve, on=OutOfStock)
    def release(event: OutOfStock) -> None:
        return None

    shop.step(on=Placed, emits=Reserved)(reserve)
    assert shop.handlers[0].undoes == "shop.reserve"


@pytest.mark.parametrize(
    ("undoes", "expected"),
    [("reserve", "shop.reserve"), ("stock.reserve", "stock.reserve")],
)
def test_undoes_a_string(undoes: str, expected: str) -> None:
    """A bare name is this service's step; a dotted name is kept as a full step id."""
    shop = Service("shop")

    @shop.compensation(undoes=undoes, on=OutOfStock)
    def release(event: OutOfStock) -> None:
        return None

    assert shop.handlers[0].undoes == expected


def test_undoes_a_saga_means_its_start() -> None:
    """``undoes=`` a Saga undoes the saga's start and declares that this service opens it."""
    saga = make_saga()
    order = Service("order")

    @order.compensation(undoes=saga, on=OutOfStock, emits=Failed)
    def fail(event: OutOfStock) -> Failed:
        return Failed()

    assert order.handlers[0].undoes == "order.start"
    assert order.start_step_id(saga) == "order.start"
    assert order.started_sagas == (saga,)
    assert order.sagas == (saga,)
    assert order.role_of(order.handlers[0], "test.deco.Failed") is Role.FAILED


# --- bad declarations ----------------------------------------------------------------------


def handler(event: Placed) -> None:
    """A module-level handler used by the bad-declaration tests."""


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda s: s.step(on=int), r"service shop handler handler 'on': .*int.* is not an Event"),
        (lambda s: s.step(on=[]), r"service shop handler handler: a handler must react"),
        (lambda s: s.step(on=Placed, emits="x"), r"service shop handler handler 'emits'"),
        (lambda s: s.step(on=Placed, emits=42), r"service shop handler handler 'emits'"),
        (lambda s: s.pivot(on=Placed, fails_with=[str]), r"shop handler handler 'fails_with'"),
        (lambda s: s.step(on=Nameless), r"service shop handler handler 'on': .*__avro_name__"),
        (lambda s: s.step(on=Placed, deadline=0), r"service shop handler handler: deadline"),
        (lambda s: s.compensation(undoes=42, on=Placed), r"shop handler handler: undoes=42"),
        (lambda s: s.compensation(undoes="", on=Placed), r"shop handler handler: undoes="),
    ],
)
def test_bad_declarations_name_service_and_handler(declare: object, message: str) -> None:
    """Each bad declaration raises ConfigurationError naming the service and handler."""
    shop = Service("shop")
    with pytest.raises(ConfigurationError, match=message):
        declare(shop)(handler)  # type: ignore[operator]
    assert shop.handlers == ()


def test_emits_none_means_no_events() -> None:
    """``emits=None`` is accepted as "emits nothing" rather than crashing."""
    shop = Service("shop")
    shop.listener(on=Placed, emits=None)(handler)  # type: ignore[arg-type]
    assert shop.handlers[0].emits == ()


def test_a_handler_must_take_the_event() -> None:
    """A handler with no positional parameter is refused, naming the service and handler."""
    shop = Service("shop")

    def nothing() -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"service shop handler nothing: .*event"):
        shop.listener(on=Placed)(nothing)


def test_a_non_function_is_refused() -> None:
    """Something without a name cannot be a handler."""
    shop = Service("shop")
    with pytest.raises(ConfigurationError, match="not a named function"):
        shop.listener(on=Placed)(42)  # type: ignore[type-var]


@pytest.mark.parametrize("name", ["", "a b", "a.b", "x/y"])
def test_bad_service_names(name: str) -> None:
    """A service name must be a non-empty identifier without dots."""
    with pytest.raises(ConfigurationError, match="service name"):
        Service(name)


def test_bad_saga_declarations() -> None:
    """A saga needs a valid name, an Event start, and completed and failed events."""
    with pytest.raises(ConfigurationError, match="saga name"):
        Saga("a b", start=Placed, completed=Done, failed=Failed)
    with pytest.raises(ConfigurationError, match="no completed event"):
        Saga("S", start=Placed, failed=Failed)
    with pytest.raises(ConfigurationError, match="no failed event"):
        Saga("S", start=Placed, completed=Done)
    with pytest.raises(ConfigurationError, match="saga S start"):
        Saga("S", start=int, completed=Done, failed=Failed)  # type: ignore[arg-type]


def test_joining_two_different_sagas_with_one_name_is_refused() -> None:
    """A service cannot take part in two different sagas sharing a name."""
    shop = Service("shop", sagas=[make_saga()])
    shop.joins(make_saga())  # an equal declaration is fine
    other = Saga("Checkout", start=Reserved, completed=Done, failed=Failed)
    with pytest.raises(ConfigurationError, match="two different sagas named Checkout"):
        shop.joins(other)


# --- invoke ------------------------------------------------------------------------------


def spec_for(func: object, *, takes_context: bool) -> HandlerSpec:
    """Return a listener spec around ``func``."""
    return HandlerSpec(
        service="shop",
        name="h",
        func=func,  # type: ignore[arg-type]
        kind=StepKind.LISTENER,
        consumes=(Placed,),
        takes_context=takes_context,
    )


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, []),
        (Reserved(), [Reserved()]),
        ([Reserved(), Noted()], [Reserved(), Noted()]),
        ((Noted(),), [Noted()]),
        ([], []),
    ],
)
def test_invoke_normalises_the_return_value(returned: object, expected: list[Event]) -> None:
    """None, one event or a sequence of events all come back as a list."""
    spec = spec_for(lambda event, ctx: returned, takes_context=True)
    assert spec.invoke(Placed(), context_for()) == expected


@pytest.mark.parametrize("returned", ["text", 42, {"a": 1}, [Reserved(), "x"]])
def test_invoke_rejects_non_events(returned: object) -> None:
    """A handler returning anything but events is a TypeError naming the handler."""
    spec = spec_for(lambda event, ctx: returned, takes_context=True)
    with pytest.raises(TypeError, match=r"handler shop\.h returned"):
        spec.invoke(Placed(), context_for())


def test_one_argument_handlers_get_no_context() -> None:
    """A handler taking only the event is called without the context."""
    shop = Service("shop")
    seen: list[Placed] = []

    @shop.step(on=Placed, emits=Reserved)
    def reserve(event: Placed) -> Reserved:
        seen.append(event)
        return Reserved(order_id=event.order_id)

    spec = shop.handlers[0]
    assert spec.takes_context is False
    assert spec.invoke(Placed(order_id="o-7"), context_for()) == [Reserved(order_id="o-7")]
    assert seen == [Placed(order_id="o-7")]


def test_two_argument_handlers_get_the_context() -> None:
    """A handler taking (event, ctx) receives the context and may also emit through it."""
    shop = Service("shop")
    contexts: list[Context] = []

    @shop.step(on=Placed, emits=[Reserved, Noted])
    def reserve(event: Placed, ctx: Context) -> Reserved:
        contexts.append(ctx)
        ctx.emit(Noted())
        return Reserved()

    ctx = context_for()
    assert shop.handlers[0].invoke(Placed(), ctx) == [Reserved()]
    assert contexts == [ctx]
    assert ctx.take_emitted() == [Noted()]


def test_var_positional_handlers_are_refused() -> None:
    """A handler taking ``*args`` does not say whether it wants the context: refused."""
    shop = Service("shop")

    def anything(*args: object) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"anything: it takes \*args.*ctx: Context"):
        shop.listener(on=Placed)(anything)
    assert shop.handlers == ()


# --- Retry -------------------------------------------------------------------------------


def test_retry_delay_grows_and_caps() -> None:
    """The n-th retry waits backoff * multiplier**(n-1), capped at max_backoff."""
    retry = Retry(max_attempts=5, backoff=0.1, multiplier=2.0, max_backoff=0.5)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.4, 0.5])


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"backoff": -1.0}, {"max_backoff": -1.0}, {"multiplier": 0.5}],
)
def test_retry_validation(kwargs: dict[str, float]) -> None:
    """Impossible retry settings are refused at declaration."""
    with pytest.raises(ConfigurationError, match="Retry"):
        Retry(**kwargs)  # type: ignore[arg-type]
