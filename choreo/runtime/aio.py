"""Awaiting ``async def`` handlers from the worker's synchronous loop: one event loop per thread.

The worker handles a batch record by record, in partition order, inside one store
transaction; an ``async def`` handler is part of that sequence, so the worker runs its
coroutine to completion before it moves to the next record (per-key order and the
batch's transaction stay exactly as for a plain handler). :class:`EventLoops` keeps one
event loop per thread that runs handlers (the worker's thread, or each pool thread with
``concurrency`` > 1) for the worker's lifetime, so clients a handler creates on its
loop (an HTTP session, a database pool) stay usable from one event to the next;
:meth:`EventLoops.close` closes them when the worker closes.

An async handler is awaited, not run concurrently with its neighbours: to overlap I/O,
gather inside the handler (``await asyncio.gather(...)``). A thread that already runs an
event loop cannot drive a worker with async handlers (a nested loop would block it): the
call is refused with an error saying to drive the worker from a thread
(``await asyncio.to_thread(worker.run_once)``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from choreo.errors import ConfigurationError

__all__ = ["EventLoops", "awaiting", "close_unawaited", "refuse_running_loop"]


class EventLoops:
    """One event loop per calling thread, created on first use and closed by :meth:`close`."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._closed = False

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run ``awaitable`` to completion on this thread's loop and return its result."""
        if _running_loop() is not None:
            close_unawaited(awaitable)
            raise ConfigurationError(_NESTED)
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        with self._lock:
            if self._closed:
                close_unawaited(awaitable)
                raise ConfigurationError(_CLOSED)
            if loop is None:
                loop = self._local.loop = asyncio.new_event_loop()
                self._loops.append(loop)
        return loop.run_until_complete(awaitable)

    def close(self) -> None:
        """Close every loop (after cancelling what handlers left running on it)."""
        with self._lock:
            self._closed = True
            loops, self._loops = self._loops, []
        for loop in loops:
            if loop.is_closed():
                continue
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except RuntimeError:  # closed from another thread while that loop runs
                continue
            loop.close()


_CLOSED = "the worker is closed; its event loops are gone"
_NESTED = (
    "an async handler cannot be awaited here: this thread already runs an event loop; "
    "drive the worker (or the test kit) from a thread, e.g. "
    "await asyncio.to_thread(worker.run_once)"
)


def refuse_running_loop() -> None:
    """Raise ConfigurationError when this thread runs an event loop (async handlers can't run).

    The worker calls it before each batch of a service with async handlers, so the
    mistake stops the worker instead of dead-lettering every event as a handler failure.
    """
    if _running_loop() is not None:
        raise ConfigurationError(_NESTED)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def close_unawaited(awaitable: object) -> None:
    """Close a coroutine that will never run (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def awaiting(func: Callable[..., Awaitable[Any]], loops: EventLoops) -> Callable[..., Any]:
    """Return a plain function calling async ``func`` and awaiting it on ``loops``."""

    def call(*args: Any) -> Any:
        return loops.run(func(*args))

    call.__name__ = getattr(func, "__name__", "handler")
    call.__qualname__ = getattr(func, "__qualname__", call.__name__)
    call.__wrapped__ = func  # type: ignore[attr-defined]
    return call
