"""A handler asks for its context by parameter name or type, never by arity; async is awaited.

Every signature that does not say clearly what it wants is refused when it is declared,
with a message that shows the fix.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from choreo import Context, Event, Service
from choreo.choreography.signature import HandlerShape, read_handler
from choreo.errors import ConfigurationError
from choreo.model.envelope import Envelope


@dataclass(frozen=True)
class Ping(Event):
    """The event handled."""

    __avro_name__: ClassVar[str] = "test.sig.Ping"
    n: int = 0


@dataclass(frozen=True)
class Pong(Event):
    """The event emitted."""

    __avro_name__: ClassVar[str] = "test.sig.Pong"
    n: int = 0


def shape(func: Any) -> HandlerShape:
    """Return the shape read from ``func`` (as the decorators read it)."""
    return read_handler(func, "service s handler h")


def context() -> Context:
    """Return a context for a Ping."""
    envelope = Envelope.start("test.sig.Ping", saga="S", service="s")
    return Context(envelope, service="s")


# --- asked for by name or type -------------------------------------------------------------


def event_only(event: Ping) -> Pong:
    return Pong(event.n)


def by_name(event: Ping, ctx) -> None:  # type: ignore[no-untyped-def]
    return None


def by_long_name(event: Ping, context: Any) -> None:
    return None


def by_type(event: Ping, c: Context) -> None:
    return None


def hidden(annotation: str) -> Any:
    """Return a handler whose context annotation cannot be evaluated (TYPE_CHECKING import)."""
    namespace: dict[str, Any] = {}
    source = f"def by_text(event, c: {annotation!r}) -> None:\n    return None\n"
    exec(source, namespace)
    return namespace["by_text"]


def by_optional_type(event: Ping, c: Context | None = None) -> None:
    return None


def with_defaults(event: Ping, ctx: Context, retries: int = 3, *, verbose: bool = False) -> None:
    return None


def default_only(event: Ping, clock: object = None) -> None:
    return None


def with_kwargs(event: Ping, **extra: object) -> None:
    return None


class Handler:
    """A callable object: its __call__ signature counts (self excluded)."""

    def __call__(self, event: Ping, ctx: Context) -> None:
        return None


@pytest.mark.parametrize(
    ("func", "takes_context"),
    [
        (event_only, False),
        (by_name, True),
        (by_long_name, True),
        (by_type, True),
        (hidden("Context"), True),
        (hidden("choreo.Context"), True),
        (by_optional_type, True),
        (with_defaults, True),
        (default_only, False),
        (with_kwargs, False),
        (Handler(), True),
        (lambda event: None, False),
        (lambda event, ctx: None, True),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__) if callable(v) else str(v),
)
def test_the_context_is_asked_for_by_name_or_type(func: Any, takes_context: bool) -> None:
    """Name ctx/context or annotation Context ask for it; extra parameters keep defaults."""
    assert shape(func) == HandlerShape(takes_context=takes_context, is_async=False)


def test_a_second_parameter_with_a_default_is_not_the_context() -> None:
    """The arity rule is gone: (event, clock=None) is called with the event only."""
    shop = Service("shop")
    seen: list[object] = []

    @shop.listener(on=Ping)
    def note(event: Ping, clock: object = "default") -> None:
        seen.append(clock)

    (spec,) = shop.handlers
    assert spec.takes_context is False
    spec.invoke(Ping(), context())
    assert seen == ["default"]


# --- refused, with the fix ------------------------------------------------------------------


def unnamed_second(event: Ping, c) -> None:  # type: ignore[no-untyped-def]
    return None


def wrong_type(event: Ping, ctx: int) -> None:
    return None


def twice(event: Ping, ctx: Any, other: Context) -> None:
    return None


def context_first(ctx: Context, event: Ping) -> None:
    return None


def context_third(event: Ping, flag: bool = False, ctx: Context | None = None) -> None:
    return None


def keyword_only(event: Ping, *, ctx: Context) -> None:
    return None


def keyword_required(event: Ping, *, limit: int) -> None:
    return None


def star_args(*args: object) -> None:
    return None


def no_event() -> None:
    return None


def generator(event: Ping):  # type: ignore[no-untyped-def]
    yield Pong()


async def async_generator(event: Ping):  # type: ignore[no-untyped-def]
    yield Pong()


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (unnamed_second, r"parameter 'c' is neither the event nor the context.*name it ctx"),
        (wrong_type, r"'ctx' is annotated int, but its name asks for the context"),
        (twice, r"asks for the context twice \('ctx', 'other'\)"),
        (context_first, r"first parameter 'ctx' receives the event"),
        (context_third, r"'ctx' must be the second positional parameter"),
        (keyword_only, r"'ctx' is keyword-only"),
        (keyword_required, r"keyword-only|parameter 'limit' is neither"),
        (star_args, r"takes \*args"),
        (hidden("Unknown"), r"parameter 'c' is neither the event nor the context"),
        (no_event, r"takes the event as its first positional parameter"),
        (generator, r"is a generator"),
        (async_generator, r"is a generator"),
    ],
    ids=lambda v: getattr(v, "__name__", "") if callable(v) else "",
)
def test_unclear_signatures_are_refused_with_the_fix(func: Any, message: str) -> None:
    """Each message names the handler and shows a signature that works."""
    shop = Service("shop")
    with pytest.raises(ConfigurationError, match=message) as refused:
        shop.listener(on=Ping)(func)
    text = str(refused.value)
    assert text.startswith("service shop handler ")
    if "generator" not in text:
        assert "(event: <EventType>, ctx: Context)" in text or "choreo.Context" in text
    assert shop.handlers == ()


# --- async ------------------------------------------------------------------------------


def test_async_handlers_are_declared_as_such_and_invoked_to_completion() -> None:
    """An async def handler is recorded as async; HandlerSpec.invoke awaits it."""
    shop = Service("shop")

    @shop.step(on=Ping, emits=Pong)
    async def answer(event: Ping, ctx: Context) -> Pong:
        await asyncio.sleep(0)
        ctx.emit(Pong(event.n + 100))
        return Pong(event.n + 1)

    (spec,) = shop.handlers
    assert (spec.is_async, spec.takes_context) == (True, True)
    ctx = context()
    assert spec.invoke(Ping(1), ctx) == [Pong(2)]
    assert ctx.take_emitted() == [Pong(101)]
    assert asyncio.run(answer(Ping(5), context())) == Pong(6)  # still a plain coroutine function


def test_an_async_callable_object_is_async() -> None:
    """An object whose __call__ is async counts as an async handler."""

    class Answer:
        async def __call__(self, event: Ping) -> Pong:
            return Pong(event.n)

    assert shape(Answer()) == HandlerShape(takes_context=False, is_async=True)
