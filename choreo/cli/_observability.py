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
    "WorkerObservability",
    "log_format_option",
    "metrics_port_option",
    "require_prometheus",
    "serve_tracker_metrics",
    "stall_after_option",
    "tracing_option",
    "use_log_format",
    "worker_observability",
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
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port}: {exc}; give a free port with"
            " --metrics-port (or stop what listens there)"
        ) from exc
    logger.info("saga metrics on %s/metrics", server.url)
    return server


def tracing_option() -> Callable[[F], F]:
    """Return the ``--tracing/--no-tracing`` flag; the command gets ``tracing`` (None: auto)."""
    return click.option(
        "--tracing/--no-tracing",
        default=None,
        help=(
            "OpenTelemetry spans per handled and emitted event. Default: on when an "
            "OpenTelemetry SDK tracer provider is set up (e.g. under opentelemetry-instrument); "
            "--tracing requires one. Needs pip install 'choreo[otel]'."
        ),
    )


def stall_after_option() -> Callable[[F], F]:
    """Return the ``--stall-after SECONDS`` option; the command gets ``stall_after``."""
    return click.option(
        "--stall-after",
        type=click.FloatRange(min=0.1),
        default=60.0,
        show_default=True,
        envvar="CHOREO_STALL_AFTER",
        help=(
            "/healthz fails when the worker has neither polled nor finished an event for "
            "this many seconds (give more than the longest retry backoff)."
        ),
    )


def _tracer_provider_set() -> bool:
    """Return True when OpenTelemetry is installed and a real tracer provider is set."""
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class WorkerObservability:
    """What ``choreo run`` adds to a worker: middleware, and the metrics port's server."""

    def __init__(self) -> None:
        self.tracing: Any = None
        self.added: list[Any] = []
        self.server: ObservabilityServer | None = None
        self.health: Any = None

    def middleware(self) -> list[Any] | None:
        """Return the worker's middleware (None: only the default one).

        Tracing comes first, so its span is current around every other hook; then the
        default logging middleware, then metrics and health.
        """
        if self.tracing is None and not self.added:
            return None
        from choreo.runtime.middleware import default_middleware

        first = [] if self.tracing is None else [self.tracing]
        return [*first, *default_middleware(), *self.added]

    def close(self) -> None:
        """Mark the worker stopped and stop serving."""
        if self.health is not None:
            self.health.stopped()
        if self.server is not None:
            self.server.stop()


def worker_observability(
    *,
    metrics_address: tuple[str, int] | None,
    stall_after: float,
    tracing: bool | None,
) -> WorkerObservability:
    """Return the middleware and started server the options ask for (see the module docs)."""
    setup = WorkerObservability()
    if tracing is None:
        tracing = _tracer_provider_set()
    elif tracing and not _tracer_provider_set():
        raise click.ClickException(
            "--tracing needs an OpenTelemetry SDK tracer provider: pip install 'choreo[otel]' "
            "and run under opentelemetry-instrument (or set one up in your own entry point)"
        )
    if tracing:
        from choreo.observability.tracing import Tracing

        setup.tracing = Tracing()
    if metrics_address is None:
        return setup
    require_prometheus()
    from prometheus_client import CollectorRegistry

    from choreo.observability.health import Health
    from choreo.observability.metrics import WorkerMetrics
    from choreo.observability.middleware import HealthMiddleware
    from choreo.observability.server import ObservabilityServer

    registry = CollectorRegistry()
    setup.health = Health(stall_after=stall_after)
    setup.added += [WorkerMetrics(registry), HealthMiddleware(setup.health)]
    host, port = metrics_address
    try:
        setup.server = ObservabilityServer(
            host=host, port=port, registry=registry, health=setup.health
        ).start()
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port}: {exc}; give a free port with"
            " --metrics-port (or stop what listens there)"
        ) from exc
    logger.info("metrics and probes on %s (/metrics, /healthz, /readyz)", setup.server.url)
    return setup
