"""Observability: Prometheus metrics, health probes, OpenTelemetry traces and JSON logs.

Everything here is optional and costs nothing until used: ``prometheus-client`` (the
``choreo[metrics]`` extra) and ``opentelemetry-api``/``-sdk`` (``choreo[otel]``) are
imported only by the parts that need them.

- :mod:`~choreo.observability.logs`: :class:`JsonFormatter`, :func:`use_json_logs`;
- :mod:`~choreo.observability.health`: :class:`Health` (liveness and readiness);
- :mod:`~choreo.observability.server`: :class:`ObservabilityServer` (``/metrics``,
  ``/healthz``, ``/readyz``);
- :mod:`~choreo.observability.tracker_metrics`: :class:`TrackerMetrics` (sagas per
  status, stuck sagas, saga durations).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from choreo.observability.health import Health
    from choreo.observability.logs import JsonFormatter, use_json_logs
    from choreo.observability.server import ObservabilityServer
    from choreo.observability.tracker_metrics import TrackerMetrics

_LAZY = {
    "Health": "choreo.observability.health",
    "JsonFormatter": "choreo.observability.logs",
    "ObservabilityServer": "choreo.observability.server",
    "TrackerMetrics": "choreo.observability.tracker_metrics",
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


__all__ = ["Health", "JsonFormatter", "ObservabilityServer", "TrackerMetrics", "use_json_logs"]
