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

import contextlib
import ipaddress
import json
import logging
import select
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from choreo.viewer.api import BadQueryError, TraceApi, TrackerReader, to_json

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "HostPolicy",
    "Limits",
    "ViewerServer",
    "is_loopback",
]

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
"""The Content-Security-Policy sent with every response."""

SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
"""Headers sent with every response, errors included."""

STATIC_FILES: Final[Mapping[str, str]] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
"""The files of ``choreo/viewer/static`` the server serves, with their content types."""

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
MAX_ID_CHARS: Final = 1024
"""The longest correlation or event id accepted in a request."""
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 43\r\n\r\n"
    b'{"error":"too many connections, try again"}'
)

_LOOPBACK_NAMES: Final = frozenset({"localhost"})
_ALLOWED_METHODS: Final = "GET, HEAD"


def _is_ip(text: str) -> bool:
    """Return True when ``text`` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Return True when ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host_header(value: str) -> tuple[str, int | None] | None:
    """Return (host, port) of a ``Host`` header value, or None when it is malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, rest = value, ""
        else:
            rest = ":" + port_text
    if not rest:
        return host.lower(), None
    if not rest.startswith(":") or not rest[1:].isdigit():
        return None
    return host.lower(), int(rest[1:])


class HostPolicy:
    """Decides which ``Host`` headers name this server (DNS-rebinding protection).

    Accepted: the bound host with the bound port; for a loopback bind also ``localhost``
    and other loopback literals; for a wildcard bind (``0.0.0.0``/``::``) any address
    literal, since a rebinding attack needs a domain name of its own; plus the names in
    ``extra``. The port must always be the bound port.
    """

    def __init__(self, host: str, port: int, extra: Iterable[str] = ()) -> None:
        """Accept ``host:port`` and the names described above."""
        self.host = host.lower()
        self.port = port
        self.extra = frozenset(name.lower() for name in extra)
        self.wildcard = host in ("0.0.0.0", "::", "")  # noqa: S104 - comparing, not binding

    def allows(self, header: str | None) -> bool:
        """Return True when the ``Host`` header value names this server."""
        if not header:
            return False
        parsed = _split_host_header(header)
        if parsed is None:
            return False
        host, port = parsed
        if port != self.port:
            return False
        if host == self.host or host in self.extra:
            return True
        if self.wildcard:
            return _is_ip(host) or host in _LOOPBACK_NAMES
        return is_loopback(self.host) and is_loopback(host)


def _id_param(query: Mapping[str, str], name: str) -> str:
    """Return the id in query parameter ``name``; raise BadQueryError when missing or long."""
    value = query.get(name)
    if not value:
        raise BadQueryError(f"give the id as the {name!r} query parameter")
    if len(value) > MAX_ID_CHARS:
        raise BadQueryError(f"{name} must be at most {MAX_ID_CHARS} characters")
    return value


def _load_static() -> dict[str, bytes]:
    """Return the bytes of every served static file, read once from the package."""
    folder = resources.files("choreo.viewer") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


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


class _Server(ThreadingHTTPServer):
    """The listening socket plus what the handlers share: API, static files, stop flag."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        api: TraceApi,
        extra_hosts: Iterable[str],
        limits: Limits,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.api = api
        self.limits = limits
        self.static = _load_static()
        self.stopping = threading.Event()
        self.streams = threading.BoundedSemaphore(max(limits.max_streams, 1))
        self.stream_slots = limits.max_streams
        self.connections = threading.BoundedSemaphore(limits.max_connections)
        self.reaper = _Reaper(self.stopping)
        self.host_policy = HostPolicy(address[0], self.server_address[1], extra_hosts)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a thread, or answer 503 at once when all are busy."""
        if not self.connections.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its place."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.reaper.release(request)
            self.connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an error that escaped a handler (the standard library would print it)."""
        logger.exception("viewer connection from %s failed", client_address)

    def server_bind(self) -> None:
        """Bind without :func:`socket.getfqdn` (a reverse DNS lookup that can hang offline)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection: the page, the JSON API and the event stream."""

    server: _Server
    timeout = WRITE_TIMEOUT_S  # replaced per connection by the server's limits (setup)
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes on a kept-alive socket
    server_version = "choreo-viewer"
    sys_version = ""

    # --- deadlines --------------------------------------------------------------------

    def setup(self) -> None:
        """Apply the write timeout to the connection's socket."""
        super().setup()
        self.connection.settimeout(self.server.limits.write_timeout)

    def handle_one_request(self) -> None:
        """Read and answer one request; its line and headers must arrive in time."""
        self.server.reaper.watch(self.connection, self.server.limits.request_timeout)
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError, OSError) as exc:
            logger.debug("connection from %s ended: %s", self.client_address, exc)
            self.close_connection = True
        finally:
            self.server.reaper.release(self.connection)

    def parse_request(self) -> bool:
        """Parse the request line and headers, then lift the deadline (the answer may stream)."""
        parsed = super().parse_request()
        self.server.reaper.release(self.connection)
        return parsed

    # --- methods --------------------------------------------------------------------

    def do_GET(self) -> None:
        """Serve a page, a static file, an API view or the event stream."""
        self._serve(head=False)

    def do_HEAD(self) -> None:
        """Serve what GET would, without the body."""
        self._serve(head=True)

    def __getattr__(self, name: str) -> Callable[[], None]:
        """Answer every method other than GET and HEAD with 405 (the viewer is read-only)."""
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        """Refuse a method that could change something."""
        self._send_json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"{self.command} is not allowed: the viewer is read-only"},
            head=self.command == "HEAD",
            headers={"Allow": _ALLOWED_METHODS},
        )

    # --- plumbing -------------------------------------------------------------------

    def end_headers(self) -> None:
        """Add the security headers to every response, then end the header block."""
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests at DEBUG through :mod:`logging` instead of writing to stderr."""
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        *,
        head: bool,
        headers: Mapping[str, str] | None = None,
        cache: str = "no-store",
    ) -> None:
        """Send a complete response (the body is left out for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(
        self,
        status: HTTPStatus,
        value: object,
        *,
        head: bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send ``value`` as HTML-safe JSON."""
        self._send(status, "application/json", to_json(value), head=head, headers=headers)

    # --- routing --------------------------------------------------------------------

    def _serve(self, *, head: bool) -> None:
        """Check the Host header, then route the request."""
        url = urlsplit(self.path)
        policy = self.server.host_policy
        if not policy.allows(self.headers.get("Host")) or (
            url.netloc and not policy.allows(url.netloc)
        ):
            self.close_connection = True
            self._send_json(
                HTTPStatus.MISDIRECTED_REQUEST,
                {"error": "this server does not serve the requested host"},
                head=head,
            )
            return
        segments = [unquote(part) for part in url.path.split("/")[1:]]
        query = dict(parse_qsl(url.query, keep_blank_values=False))
        try:
            self._route(segments, query, head=head)
        except BadQueryError as error:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)}, head=head)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away during %s", self.path)
        except Exception:
            logger.exception("viewer failed to answer GET %s", url.path)
            self.close_connection = True
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (logged)"}, head=head
            )

    def _route(self, segments: list[str], query: dict[str, str], *, head: bool) -> None:
        """Send the response for the path ``segments``."""
        api = self.server.api
        match segments:
            case [""] | ["index.html"]:
                self._static("index.html", head=head)
            case ["static", name] if name in STATIC_FILES and name != "index.html":
                self._static(name, head=head)
            case ["api", "summary"]:
                self._send_json(HTTPStatus.OK, api.summary(), head=head)
            case ["api", "sagas"]:
                self._send_json(HTTPStatus.OK, api.sagas(query), head=head)
            case ["api", "saga"]:
                correlation_id = _id_param(query, "id")
                self._found(api.saga(correlation_id), f"no saga {correlation_id!r}", head=head)
            case ["api", "payload"]:
                correlation_id, event_id = _id_param(query, "saga"), _id_param(query, "event")
                self._found(
                    api.payload(correlation_id, event_id),
                    f"no payload kept for event {event_id!r}",
                    head=head,
                )
            case ["api", "sagas", correlation_id]:
                self._found(api.saga(correlation_id), f"no saga {correlation_id!r}", head=head)
            case ["api", "sagas", correlation_id, "events", event_id, "payload"]:
                self._found(
                    api.payload(correlation_id, event_id),
                    f"no payload kept for event {event_id!r}",
                    head=head,
                )
            case ["api", "graph"]:
                self._send_json(HTTPStatus.OK, api.graph(), head=head)
            case ["api", "stream"]:
                self._stream(head=head)
            case _:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found"}, head=head)

    def _found(self, value: object | None, missing: str, *, head: bool) -> None:
        """Send ``value`` as JSON, or 404 with ``missing`` when it is None."""
        if value is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": missing}, head=head)
        else:
            self._send_json(HTTPStatus.OK, value, head=head)

    def _static(self, name: str, *, head: bool) -> None:
        """Send one of the packaged static files."""
        self._send(
            HTTPStatus.OK, STATIC_FILES[name], self.server.static[name], head=head, cache="no-cache"
        )

    def _stream(self, *, head: bool) -> None:
        """Send Server-Sent Events: ``change`` with the new version whenever the tracker moves.

        Changes are coalesced (at most one event per :data:`STREAM_MIN_INTERVAL_S`); an idle
        stream sends a comment every :data:`STREAM_HEARTBEAT_S` so a closed client is
        noticed. The stream ends when the client leaves or the server stops.
        """
        if self.server.stream_slots == 0 or not self.server.streams.acquire(blocking=False):
            self._send_json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"error": "too many event streams"}, head=head
            )
            return
        try:
            self.close_connection = True
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self._pump_changes()
        finally:
            self.server.streams.release()

    def _pump_changes(self) -> None:
        """Write change events until the client leaves or the server stops."""
        tracker = self.server.api.tracker
        stopping = self.server.stopping
        version = tracker.version
        self._event("hello", version, retry_ms=2000)
        last_write = time.monotonic()
        while not stopping.is_set() and not self._client_left():
            current = tracker.wait_for_change(version, STREAM_POLL_S)
            if current != version:
                version = current
                self._event("change", version)
                last_write = time.monotonic()
                stopping.wait(STREAM_MIN_INTERVAL_S)
            elif time.monotonic() - last_write >= STREAM_HEARTBEAT_S:
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                last_write = time.monotonic()

    def _client_left(self) -> bool:
        """Return True when the client closed its end (an event stream is never written to)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return bool(sock.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True

    def _event(self, name: str, version: int, *, retry_ms: int | None = None) -> None:
        """Write one Server-Sent Event carrying the tracker version."""
        lines = [f"retry: {retry_ms}"] if retry_ms is not None else []
        lines += [f"id: {version}", f"event: {name}", "data: " + json.dumps({"version": version})]
        self.wfile.write(("\n".join(lines) + "\n\n").encode("utf-8"))
        self.wfile.flush()


class ViewerServer:
    """Serves the saga-trace web viewer over ``tracker`` on ``http://host:port/``.

    The socket is bound at construction (``port=0`` picks a free port; :attr:`url` is
    then known); :meth:`start` serves from a background daemon thread and :meth:`stop`
    closes the socket and ends the event streams. Usable as a context manager.
    ``allowed_hosts`` adds host names (without port) accepted in the ``Host`` header,
    e.g. the machine's DNS name when serving remotely.
    """

    def __init__(
        self,
        tracker: TrackerReader,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_hosts: Iterable[str] = (),
        limits: Limits | None = None,
    ) -> None:
        """Bind ``host:port`` to serve ``tracker``; nothing is served before :meth:`start`.

        ``limits`` bounds connections, streams and waits (see :class:`Limits`).
        """
        self.tracker = tracker
        self._server = _Server((host, port), TraceApi(tracker), allowed_hosts, limits or Limits())
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
