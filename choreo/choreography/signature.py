"""Reading a handler's signature: whether it asks for the context, and whether it is async.

A handler takes the incoming event as its first parameter. It asks for the
:class:`~choreo.model.context.Context` with a second positional parameter that is *named*
``ctx`` or ``context``, or *annotated* ``Context`` (any name); the number of parameters
never decides. Any other parameter must have a default (it keeps it: choreo passes only
the event and, when asked for, the context).

A signature that cannot be read unambiguously is refused when the handler is declared,
with a :class:`~choreo.errors.ConfigurationError` that shows the fix: a required
parameter that is neither the event nor the context, a context parameter annotated with
another type, two context parameters, a keyword-only context, ``*args``, or a generator.

``async def`` handlers are accepted: :func:`read_handler` reports them, and the worker
awaits them (see :mod:`choreo.runtime.aio`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from choreo.errors import ConfigurationError
from choreo.model.context import Context

__all__ = ["CONTEXT_NAMES", "HandlerShape", "is_async_callable", "read_handler"]

CONTEXT_NAMES: Final = frozenset({"ctx", "context"})
"""The parameter names that ask for the context without an annotation."""

_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC: Final = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_FIX: Final = "def {name}(event: <EventType>, ctx: Context) -> ...   (or just (event) without one)"


@dataclass(frozen=True, slots=True)
class HandlerShape:
    """What a handler's signature says: does it take the context, is it a coroutine function."""

    takes_context: bool
    is_async: bool


def is_async_callable(func: Callable[..., Any]) -> bool:
    """Return True when calling ``func`` gives a coroutine (``async def``, async ``__call__``)."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    return call is not None and inspect.iscoroutinefunction(call)


def read_handler(func: Callable[..., Any], where: str) -> HandlerShape:
    """Return the shape of handler ``func``, or raise ConfigurationError saying how to fix it.

    ``where`` names the handler in messages (``service x handler y``).
    """
    fix = _FIX.format(name=getattr(func, "__name__", "handler"))
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise ConfigurationError(
            f"{where}: it is a generator (it uses yield); a handler returns its events: "
            "return an Event, a list of Events or None, or call ctx.emit(event)"
        )
    params = _parameters(func, where, fix)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        raise ConfigurationError(
            f"{where}: it takes *args, so choreo cannot tell whether it asks for the context; "
            f"name its parameters: {fix}"
        )
    positional = [p for p in params if p.kind in _POSITIONAL]
    if not positional:
        raise ConfigurationError(
            f"{where}: a handler takes the event as its first positional parameter: {fix}"
        )
    event, rest = positional[0], positional[1:]
    if _asks_for_context(event, where, fix):
        raise ConfigurationError(
            f"{where}: its first parameter {event.name!r} receives the event, not the "
            f"context; put the event first: {fix}"
        )
    wanted = [p for p in params if p is not event and _asks_for_context(p, where, fix)]
    if len(wanted) > 1:
        names = ", ".join(repr(p.name) for p in wanted)
        raise ConfigurationError(
            f"{where}: it asks for the context twice ({names}); keep one: {fix}"
        )
    if wanted and (not rest or wanted[0] is not rest[0]):
        raise ConfigurationError(
            f"{where}: the context parameter {wanted[0].name!r} must be the second positional "
            f"parameter, right after the event: {fix}"
        )
    for param in params:
        if param is event or (wanted and param is wanted[0]):
            continue
        if param.kind in _VARIADIC or param.default is not inspect.Parameter.empty:
            continue
        raise ConfigurationError(
            f"{where}: parameter {param.name!r} is neither the event nor the context, and "
            "choreo passes nothing else. To receive the context, name it ctx (or context) "
            f"or annotate it with choreo.Context: {fix}; otherwise give it a default"
        )
    return HandlerShape(takes_context=bool(wanted), is_async=is_async_callable(func))


def _parameters(func: Callable[..., Any], where: str, fix: str) -> list[inspect.Parameter]:
    """Return ``func``'s parameters, annotations evaluated when they can be."""
    try:
        return list(inspect.signature(func, eval_str=True).parameters.values())
    except (NameError, TypeError, SyntaxError, AttributeError):
        pass  # e.g. an annotation imported only under TYPE_CHECKING: read them as text
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{where}: its signature cannot be read (a built-in?); wrap it in a function: {fix}"
        ) from None


def _asks_for_context(param: inspect.Parameter, where: str, fix: str) -> bool:
    """Return True when ``param`` asks for the context: annotated ``Context``, else named so.

    Refuses a keyword-only context, and a parameter named ``ctx``/``context`` that is
    annotated with another type.
    """
    if param.kind in _VARIADIC:
        return False
    verdict = _is_context_type(param.annotation)
    if verdict is False and param.name in CONTEXT_NAMES:
        raise ConfigurationError(
            f"{where}: parameter {param.name!r} is annotated {_shown(param.annotation)}, but "
            f"its name asks for the context; annotate it with choreo.Context or rename it: {fix}"
        )
    if not verdict and param.name not in CONTEXT_NAMES:
        return False
    if param.kind is inspect.Parameter.KEYWORD_ONLY:
        raise ConfigurationError(
            f"{where}: the context parameter {param.name!r} is keyword-only; make it the "
            f"second positional parameter: {fix}"
        )
    return True


def _is_context_type(annotation: object) -> bool | None:
    """Return whether an annotation names the context; None when it says nothing (none, Any)."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return None
    if isinstance(annotation, str):  # an annotation that could not be evaluated
        last = annotation.replace(" ", "").rsplit(".", 1)[-1]
        if last in ("Any", "object"):
            return None
        return True if last in ("Context", "HandlerContext") else None
    if isinstance(annotation, type):
        return issubclass(annotation, Context)
    members = getattr(annotation, "__args__", None) or ()  # Context | None, Optional[Context]
    return any(isinstance(m, type) and issubclass(m, Context) for m in members)


def _shown(annotation: object) -> str:
    if isinstance(annotation, str):
        return annotation
    return str(getattr(annotation, "__qualname__", None) or annotation)
