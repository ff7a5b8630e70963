"""The metrics port: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for Kubernetes.

:class:`ObservabilityServer` serves, on a background thread:

- ``GET /metrics``: the registry's metrics in the Prometheus text format (or OpenMetrics
  when the scraper asks for it in ``Accept``), when a registry is given;
- ``GET /healthz``: 200 when the worker is live, else 503 (see
  :class:`~choreo.observability.health.Health`), with a small JSON body;
- ``GET /readyz``: 200 when it is ready, else 503, with a small JSON body.

Anything else is 404 (405 for another method). The server has no authentication and
shows no event data: metric names, labels (service, event type, topic, partition, saga
type and status) and counts only. Bind it to an address that only the scraper and the
kubelet reach.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar, Final

from choreo.observability.health import Health, Probe

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ObservabilityServer", "parse_address"]

logger = logging.getLogger(__name__)

_JSON: Final = "application/json"
_MAX_PORT: Final = 65_535


def parse_address(text: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:  # noqa: S104
    """Return ``(host, port)`` of ``"PORT"``, ``"HOST:PORT"`` or ``"[IPv6]:PORT"``.

    A bare port binds ``default_host`` (every interface: Prometheus and the kubelet reach
    a pod from outside). Raises ValueError for anything else.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = default_host, text.strip()
    host = host.removeprefix("[").removesuffix("]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= _MAX_PORT:
        raise ValueError(f"{text!r} is not PORT or HOST:PORT (a port from 0 to 65535)")
    return host, int(port_text)


class ObservabilityServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (see the module docs).

    ``registry`` is a :class:`prometheus_client.CollectorRegistry` (None: no
    ``/metrics``); ``health`` a :class:`Health` (None: no probes). ``port=0`` picks a
    free port, read back from :attr:`port`. Raises OSError when the address cannot be
    bound.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        registry: CollectorRegistry | None = None,
        health: Health | None = None,
    ) -> None:
        handler = type("_BoundHandler", (_Handler,), {"registry": registry, "health": health})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the server's base URL (without a trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ObservabilityServer:
        """Start serving on a daemon thread (once) and return self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="choreo-metrics", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    """Routes the three paths; the registry and health are bound per server."""

    registry: ClassVar[Any] = None
    health: ClassVar[Health | None] = None
    server_version = "choreo"
    sys_version = ""

    def do_GET(self) -> None:
        """Answer a probe or a scrape."""
        path = self.path.split("?", 1)[0]
        if path == "/metrics" and self.registry is not None:
            self._metrics()
        elif path == "/healthz" and self.health is not None:
            self._probe(self.health.liveness())
        elif path == "/readyz" and self.health is not None:
            self._probe(self.health.readiness())
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        """Answer like GET, without a body."""
        self.do_GET()

    def _metrics(self) -> None:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(self.headers.get("Accept", "")[:1024])
        self._send(HTTPStatus.OK, encoder(self.registry), content_type)

    def _probe(self, probe: Probe) -> None:
        status = HTTPStatus.OK if probe.ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, json.dumps(probe.detail).encode() + b"\n", _JSON)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests at debug level (scrapes and probes arrive every few seconds)."""
        logger.debug("%s %s", self.address_string(), format % args)
