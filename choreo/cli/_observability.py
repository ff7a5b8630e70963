"""The observability options of ``choreo run``, ``choreo watch`` and ``choreo ui``.

``--metrics-port [HOST:]PORT`` serves ``/metrics`` (and, for a worker, ``/healthz`` and
``/readyz``) on that address; a bare port binds every interface, as Prometheus and the
kubelet reach a pod from outside. ``--log-format json`` writes one JSON object per log
line (see :mod:`choreo.observability.logs`). The heavy parts (prometheus-client, the
OpenTelemetry SDK) are imported only when an option asks for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from choreo.observability.server import ObservabilityServer

__all__ = [
    "log_format_option",
    "metrics_port_option",
    "require_prometheus",
    "serve_tracker_metrics",
    "use_log_format",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse ``--metrics-port`` into ``(host, port)`` (None when not given)."""
    if value is None:
        return None
    from choreo.observability.server import parse_address

    try:
        return parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def metrics_port_option(what: str) -> Callable[[F], F]:
    """Return the ``--metrics-port [HOST:]PORT`` option; the command gets ``metrics_address``.

    ``what`` says what is served there, for the help text.
    """
    return click.option(
        "--metrics-port",
        "metrics_address",
        metavar="[HOST:]PORT",
        envvar="CHOREO_METRICS_PORT",
        callback=_address,
        help=(
            f"Serve {what} on this port (every interface; HOST:PORT for one; or "
            "$CHOREO_METRICS_PORT). Needs prometheus-client: pip install 'choreo[metrics]'."
        ),
    )


def log_format_option() -> Callable[[F], F]:
    """Return the ``--log-format text|json`` option; the command gets ``log_format``."""
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        envvar="CHOREO_LOG_FORMAT",
        help=(
            "json: one JSON object per line with service, correlation id, event id and saga "
            "on every line about an event (or $CHOREO_LOG_FORMAT)."
        ),
    )


def use_log_format(log_format: str, *, service: str | None = None) -> None:
    """Switch the root logger to JSON lines when ``log_format`` is ``"json"``."""
    if log_format != "json":
        return
    from choreo.observability.logs import use_json_logs

    use_json_logs(static={"service": service} if service else None)


def require_prometheus() -> None:
    """Raise a click error naming the extra when prometheus-client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "--metrics-port needs prometheus-client: pip install 'choreo[metrics]'"
        ) from None


def serve_tracker_metrics(tracker: Any, address: tuple[str, int]) -> ObservabilityServer:
    """Serve ``tracker``'s saga metrics on ``address``; return the started server.

    Call it before the tracker is fed, so sagas ending while it reads are timed.
    """
    require_prometheus()
    from prometheus_client import CollectorRegistry

    from choreo.observability.server import ObservabilityServer
    from choreo.observability.tracker_metrics import TrackerMetrics

    registry = CollectorRegistry()
    registry.register(TrackerMetrics(tracker))
    host, port = address
    try:
        server = ObservabilityServer(host=host, port=port, registry=registry).start()
    except OSError as exc:
        raise click.ClickException(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    logger.info("saga metrics on %s/metrics", server.url)
    return server
