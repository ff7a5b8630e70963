"""The viewer's request handling: the listening server and the per-connection handler.

:class:`_Server` bounds connections (``503`` beyond ``max_connections``) and holds what
the handlers share; :class:`_Handler` serves the static page, the JSON API and the
Server-Sent Events stream of one connection. See :mod:`choreo.viewer.web` for the rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from choreo.viewer.api import BadQueryError, TraceApi, to_json
from choreo.viewer.limits import (
    _BUSY,
    STREAM_HEARTBEAT_S,
    STREAM_MIN_INTERVAL_S,
    STREAM_POLL_S,
    WRITE_TIMEOUT_S,
    Limits,
    _Reaper,
)
from choreo.viewer.policy import (
    _ALLOWED_METHODS,
    SECURITY_HEADERS,
    HostPolicy,
    _id_param,
)

# the viewer server logs under one name, the one it had before the split
logger = logging.getLogger("choreo.viewer.web")

STATIC_FILES: Final[Mapping[str, str]] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
"""The files of ``choreo/viewer/static`` the server serves, with their content types."""


def _load_static() -> dict[str, bytes]:
    """Return the bytes of every served static file, read once from the package."""
    folder = resources.files("choreo.viewer") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


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
