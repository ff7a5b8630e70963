"""How much the viewer serves at once and how long it waits for a client.

The defaults and :class:`Limits` bound connections, event streams and waits; the reaper
drops a connection whose request does not arrive in time (a slowloris client).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Final

# the viewer server logs under one name, the one it had before the split
logger = logging.getLogger("choreo.viewer.web")

STREAM_HEARTBEAT_S: Final = 15.0
"""Seconds between keep-alive comments on an idle event stream."""
STREAM_MIN_INTERVAL_S: Final = 0.25
"""The least time between two ``change`` events on one stream (changes are coalesced)."""
STREAM_POLL_S: Final = 0.5
"""How long a stream waits for a change before checking whether the server is stopping."""
MAX_STREAMS: Final = 32
"""Event streams served at once by default; more are refused with 503."""
MAX_CONNECTIONS: Final = 128
"""Connections served at once by default; more are answered 503 and closed."""
REQUEST_TIMEOUT_S: Final = 10.0
"""Default seconds for a request's line and headers to arrive, and for a kept-alive
connection to wait for its next request."""
WRITE_TIMEOUT_S: Final = 30.0
"""Default seconds a write to a client may block before the connection is dropped."""
REAPER_INTERVAL_S: Final = 0.2
"""How often the deadlines of requests being read are checked."""


_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 43\r\n\r\n"
    b'{"error":"too many connections, try again"}'
)


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the viewer serves at once and how long it waits (see the module doc)."""

    max_connections: int = MAX_CONNECTIONS
    max_streams: int = MAX_STREAMS
    request_timeout: float = REQUEST_TIMEOUT_S
    write_timeout: float = WRITE_TIMEOUT_S

    def __post_init__(self) -> None:
        """Reject limits that would serve nothing or wait forever."""
        if self.max_connections < 1 or self.max_streams < 0:
            raise ValueError("max_connections must be >= 1 and max_streams >= 0")
        if self.request_timeout <= 0 or self.write_timeout <= 0:
            raise ValueError("request_timeout and write_timeout must be positive")


class _Reaper:
    """Closes connections whose request did not arrive in time (one thread for all)."""

    def __init__(self, stopping: threading.Event) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._stopping = stopping
        self._thread = threading.Thread(target=self._run, name="choreo-viewer-reaper", daemon=True)
        self._thread.start()

    def watch(self, sock: socket.socket, seconds: float) -> None:
        """Shut ``sock`` down unless :meth:`release` is called within ``seconds``."""
        with self._lock:
            self._deadlines[sock] = time.monotonic() + seconds

    def release(self, sock: socket.socket) -> None:
        """Stop watching ``sock``."""
        with self._lock:
            self._deadlines.pop(sock, None)

    def _run(self) -> None:
        while not self._stopping.wait(REAPER_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, deadline in self._deadlines.items() if deadline < now]
                for sock in late:
                    del self._deadlines[sock]
            for sock in late:
                logger.debug("dropping a connection whose request did not arrive in time")
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
