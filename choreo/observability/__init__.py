"""Observability: Prometheus metrics, health probes, OpenTelemetry traces and JSON logs.

Everything here is optional and costs nothing until used: ``prometheus-client`` (the
``choreo[metrics]`` extra) and ``opentelemetry-api``/``-sdk`` (``choreo[otel]``) are
imported only by the parts that need them, and a worker without these middleware keeps
its per-event fast path.

- :class:`WorkerMetrics` (:mod:`~choreo.observability.metrics`): worker middleware
  counting events, handler latency, consumer lag, outbox backlog and rebalances;
- :class:`TrackerMetrics` (:mod:`~choreo.observability.tracker_metrics`): a tracker's
  sagas per status, stuck sagas and saga durations;
- :class:`Tracing` (:mod:`~choreo.observability.tracing`): worker middleware making
  OpenTelemetry consumer and producer spans that follow choreo's ``traceparent`` headers;
- :class:`Health` and :class:`HealthMiddleware` (:mod:`~choreo.observability.health`,
  :mod:`~choreo.observability.middleware`): liveness and readiness;
- :class:`ObservabilityServer` (:mod:`~choreo.observability.server`): ``/metrics``,
  ``/healthz`` and ``/readyz`` on one port;
- :class:`JsonFormatter` and :func:`use_json_logs` (:mod:`~choreo.observability.logs`):
  one JSON object per log line, with the ids of the event a line is about.

See docs/operating-observability.md for running them in production.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from choreo.observability.health import Health
    from choreo.observability.logs import JsonFormatter, use_json_logs
    from choreo.observability.metrics import WorkerMetrics
    from choreo.observability.middleware import HealthMiddleware
    from choreo.observability.server import ObservabilityServer
    from choreo.observability.tracing import Tracing
    from choreo.observability.tracker_metrics import TrackerMetrics

_LAZY = {
    "Health": "choreo.observability.health",
    "HealthMiddleware": "choreo.observability.middleware",
    "JsonFormatter": "choreo.observability.logs",
    "ObservabilityServer": "choreo.observability.server",
    "TrackerMetrics": "choreo.observability.tracker_metrics",
    "Tracing": "choreo.observability.tracing",
    "WorkerMetrics": "choreo.observability.metrics",
    "use_json_logs": "choreo.observability.logs",
}


def __getattr__(name: str) -> Any:
    """Import a lazily exported name on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'choreo.observability' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Health",
    "HealthMiddleware",
    "JsonFormatter",
    "ObservabilityServer",
    "Tracing",
    "TrackerMetrics",
    "WorkerMetrics",
    "use_json_logs",
]
