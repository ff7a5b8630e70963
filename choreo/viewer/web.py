"""The viewer's HTTP server: static page, JSON API and a Server-Sent Events stream.

Read-only and local by design:

- only ``GET`` and ``HEAD`` are served; any other method gets ``405``;
- a request whose ``Host`` header is not the address served is refused with ``421``
  (a DNS-rebinding page cannot talk to the viewer through a name of its own);
- every response carries a strict Content-Security-Policy, ``nosniff`` and
  ``no-referrer``; JSON escapes ``<``, ``>`` and ``&`` (see :func:`~choreo.viewer.api.to_json`);
- the page itself renders data with ``textContent`` only.

Bounded, so that slow or numerous clients cannot exhaust it:

- at most ``max_connections`` connections are served at once (one daemon thread each);
  a connection beyond that is answered ``503`` and closed at once, without a thread;
- a request's line and headers must arrive within ``request_timeout`` seconds, and a
  kept-alive connection may idle that long between requests (a slowloris client that
  trickles its headers is dropped); a blocked write fails after ``write_timeout``;
- at most ``max_streams`` live event streams; a stream notices within
  :data:`STREAM_POLL_S` that its client left and frees its slot; the page reconnects
  with exponential backoff after an error or a ``503``.

Every saga is reachable whatever its correlation id (``..``, ``/``, ``%``, spaces):
``/api/saga?id=…`` and ``/api/payload?saga=…&event=…`` take the ids as query parameters,
which no browser or proxy normalises.

Built on the standard library's :class:`~http.server.ThreadingHTTPServer`; no runtime
dependency is added.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from choreo.tracker.keys import KeyIndex
from choreo.viewer.api import TraceApi, TrackerReader
from choreo.viewer.handler import (
    STATIC_FILES,
    _Server,
)
from choreo.viewer.limits import (
    MAX_CONNECTIONS,
    MAX_STREAMS,
    REAPER_INTERVAL_S,
    REQUEST_TIMEOUT_S,
    STREAM_HEARTBEAT_S,
    STREAM_MIN_INTERVAL_S,
    STREAM_POLL_S,
    WRITE_TIMEOUT_S,
    Limits,
)
from choreo.viewer.policy import (
    CONTENT_SECURITY_POLICY,
    MAX_ID_CHARS,
    SECURITY_HEADERS,
    HostPolicy,
    is_loopback,
)

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "MAX_CONNECTIONS",
    "MAX_ID_CHARS",
    "MAX_STREAMS",
    "REAPER_INTERVAL_S",
    "REQUEST_TIMEOUT_S",
    "SECURITY_HEADERS",
    "STATIC_FILES",
    "STREAM_HEARTBEAT_S",
    "STREAM_MIN_INTERVAL_S",
    "STREAM_POLL_S",
    "WRITE_TIMEOUT_S",
    "HostPolicy",
    "Limits",
    "ViewerServer",
    "is_loopback",
]

logger = logging.getLogger(__name__)


class ViewerServer:
    """Serves the saga-trace web viewer over ``tracker`` on ``http://host:port/``.

    The socket is bound at construction (``port=0`` picks a free port; :attr:`url` is
    then known); :meth:`start` serves from a background daemon thread and :meth:`stop`
    closes the socket and ends the event streams. Usable as a context manager.
    ``allowed_hosts`` adds host names (without port) accepted in the ``Host`` header,
    e.g. the machine's DNS name when serving remotely. ``keys``, a
    :class:`~choreo.tracker.keys.KeyIndex` fed the same records as ``tracker``, lets the
    search box find sagas by business key (``order_id=123``, ``alice@example.com``).
    """

    def __init__(
        self,
        tracker: TrackerReader,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_hosts: Iterable[str] = (),
        limits: Limits | None = None,
        keys: KeyIndex | None = None,
    ) -> None:
        """Bind ``host:port`` to serve ``tracker``; nothing is served before :meth:`start`.

        ``limits`` bounds connections, streams and waits (see :class:`Limits`).
        """
        self.tracker = tracker
        self._server = _Server(
            (host, port), TraceApi(tracker, keys), allowed_hosts, limits or Limits()
        )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """Return the host the server is bound to."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """Return the port the server is bound to (the chosen one when 0 was asked)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Return the page's address, e.g. ``http://127.0.0.1:8765/``."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> ViewerServer:
        """Start serving from a background daemon thread; return self."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="choreo-viewer",
            daemon=True,
        )
        self._thread.start()
        logger.info("viewer serving on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: end the event streams, close the socket and join the thread."""
        self._server.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ViewerServer:
        """Start serving and return self."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving."""
        self.stop()
