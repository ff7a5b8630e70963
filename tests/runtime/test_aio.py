"""EventLoops: one event loop per thread, kept between calls, all closed at the end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from choreo.errors import ConfigurationError
from choreo.runtime.aio import EventLoops, awaiting


async def current_loop() -> asyncio.AbstractEventLoop:
    await asyncio.sleep(0)
    return asyncio.get_running_loop()


def test_each_thread_keeps_its_own_loop_until_close() -> None:
    """Calls on one thread share a loop; another thread gets another; close closes both."""
    loops = EventLoops()
    first, again = loops.run(current_loop()), loops.run(current_loop())
    other: list[asyncio.AbstractEventLoop] = []
    thread = threading.Thread(target=lambda: other.append(loops.run(current_loop())))
    thread.start()
    thread.join()
    assert first is again and other[0] is not first
    loops.close()
    assert first.is_closed() and other[0].is_closed()
    with pytest.raises(ConfigurationError, match="closed"):
        loops.run(current_loop())


def test_close_cancels_what_handlers_left_running() -> None:
    """A task a handler spawned and never awaited is cancelled when the loops close."""
    loops = EventLoops()
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def spawn() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(forever())

    task = loops.run(spawn())
    loops.close()
    assert cancelled.is_set() and task.cancelled()


def test_awaiting_turns_a_coroutine_function_into_a_plain_one() -> None:
    """The wrapper passes the arguments, returns the result and raises the error."""
    loops = EventLoops()

    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        if a < 0:
            raise ValueError("negative")
        return a + b

    call = awaiting(add, loops)
    assert call(2, 3) == 5 and call.__name__ == "add"
    with pytest.raises(ValueError, match="negative"):
        call(-1, 0)
    loops.close()


def test_a_thread_running_a_loop_is_refused() -> None:
    """Inside a running loop the coroutine is closed (never awaited) and the call refused."""
    loops = EventLoops()

    async def inside() -> None:
        with pytest.raises(ConfigurationError, match="already runs an event loop"):
            loops.run(current_loop())

    asyncio.run(inside())
    loops.close()
