"""Client calls that may block for good, run with a bound on a daemon thread.

librdkafka can block far past its own timeouts while a broker or a coordinator is
unreachable. Seen after a broker SIGKILL and restart: ``send_offsets_to_transaction``
waiting for a group coordinator its client no longer looks up, and the close of a
client whose broker thread never terminates (a handle left "terminating" with
references by librdkafka's re-bootstrap). A worker waiting on such a call forever is the
worst outcome: it stays a (static) member of its group, so its partitions stay with a
process that handles nothing and never exits for its supervisor to restart it.

:class:`BoundedCaller` runs a client's calls on one daemon thread of its own and gives up
waiting after a bound; :func:`run_bounded` does the same for a one-off call (a close).
A call given up on keeps running on its thread, which keeps its client referenced: the
client is then never destroyed at interpreter exit either (that destruction would block
the same way), and the process can exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["BoundedCaller", "run_bounded"]

_Request = tuple[Callable[[], object], list[BaseException | None], threading.Event]


def run_bounded(call: Callable[[], object], name: str, limit: float) -> bool:
    """Run ``call`` on a new daemon thread; return whether it finished within ``limit`` s.

    The call's own exception is raised here when it finished in time. ``limit`` 0 starts
    the call and returns False at once (fire and forget).
    """
    outcome: list[BaseException | None] = []
    done = threading.Event()
    thread = threading.Thread(
        target=_serve_one, args=((call, outcome, done),), name=f"choreo-{name}", daemon=True
    )
    thread.start()
    if not done.wait(limit):
        return False
    error = outcome[0]
    if error is not None:
        raise error
    return True


def _serve_one(request: _Request) -> None:
    """Run one request, recording its exception (or None) and signalling its end."""
    call, outcome, done = request
    try:
        call()
    except BaseException as exc:  # handed to the waiting thread
        outcome.append(exc)
    else:
        outcome.append(None)
    finally:
        done.set()


class BoundedCaller:
    """Runs one client's calls, one at a time, on a daemon thread; waits at most a bound.

    A thread of its own per client (not a pool: a pool's threads are joined at exit, and
    a hung one would keep the process alive). After a call outlived its bound the caller
    is spent: the thread is stuck in it, and every later call fails at once.
    """

    _STOP: Final = None

    def __init__(self, name: str) -> None:
        self._name = name
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.hung: str | None = None
        """The name of the call that outlived its bound, if one did."""

    def call(self, call: Callable[[], object], what: str, limit: float) -> bool:
        """Run ``call``; return whether it finished within ``limit`` s (its error is raised).

        Returns False at once when an earlier call hung.
        """
        if self.hung is not None:
            return False
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"choreo-{self._name}", daemon=True
            )
            self._thread.start()
        outcome: list[BaseException | None] = []
        done = threading.Event()
        self._requests.put((call, outcome, done))
        if not done.wait(limit):
            self.hung = what
            return False
        error = outcome[0]
        if error is not None:
            raise error
        return True

    def _serve(self) -> None:
        """Serve requests until :meth:`stop`."""
        while True:
            request = self._requests.get()
            if request is None:
                return
            _serve_one(request)

    def stop(self) -> None:
        """Let the thread end once it is done with what it runs."""
        if self._thread is not None:
            self._requests.put(self._STOP)
            self._thread = None
