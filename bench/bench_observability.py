"""Benchmark what metrics and tracing cost the runtime: events/s off, metrics on, both on.

In one run, over the same N pre-published records (bench_runtime's realistic small event
with the full choreo envelope and a W3C traceparent), a :class:`~choreo.runtime.Worker`
with a memory inbox handles every record on a :class:`~choreo.transports.memory.MemoryBus`,
batch by batch (500 records), in three configurations:

- **off**: no observability middleware (the worker's fast path);
- **metrics**: what ``choreo run --metrics-port`` installs: :class:`WorkerMetrics`
  (counters, the handler latency histogram, lag, backlog, rebalances) and
  :class:`HealthMiddleware`, registered in a Prometheus registry that is scraped once at
  the end (the scrape is not timed);
- **tracing+metrics**: the same plus :class:`Tracing` with the OpenTelemetry SDK: a
  ``TracerProvider`` whose ``BatchSpanProcessor`` hands every span to an exporter that
  drops it (the SDK's cost of making, ending and batching a consumer span per event and a
  producer span per emitted event, without a collector's network cost);
- **tracing(10% sampled)+metrics**: the same with a ``TraceIdRatioBased(0.1)`` sampler:
  what tracing costs when nine traces in ten are dropped at the source.

The configurations are interleaved, ``--repeat`` times each (default 3), and the best of
each is kept; ratios are against **off** of the same run. Times are CPU seconds of the
whole process (``time.process_time``: the span processor's export thread included), the
input frozen out of the garbage collector's view as in bench_runtime.

    python bench/bench_observability.py              # writes bench/results/observability.json
    python bench/bench_observability.py --events 20000 --no-write
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_runtime import _settle, build, fill

from choreo.runtime import Worker, WorkerConfig
from choreo.runtime.middleware import Middleware
from choreo.store import MemoryInbox
from choreo.transports.memory import MemoryBus, MemoryTransport

RESULTS = Path(__file__).parent / "results" / "observability.json"
BATCH = 500
SAMPLED = "tracing(10% sampled)+metrics"


class _DroppingExporter:
    """A span exporter that accepts every span and keeps none."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> Any:
        """Count the spans and drop them."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered here."""
        return True


def _metrics() -> tuple[list[Middleware], Callable[[], int]]:
    """Return the metrics middleware (as ``choreo run --metrics-port``) and a scrape."""
    from prometheus_client import CollectorRegistry, generate_latest

    from choreo.observability.health import Health
    from choreo.observability.metrics import WorkerMetrics
    from choreo.observability.middleware import HealthMiddleware

    registry = CollectorRegistry()
    middleware: list[Middleware] = [WorkerMetrics(registry), HealthMiddleware(Health())]
    return middleware, lambda: len(generate_latest(registry))


def _tracing(ratio: float = 1.0) -> tuple[list[Middleware], Callable[[], int]]:
    """Return the tracing middleware over an SDK provider that drops its spans.

    ``ratio`` < 1 samples that share of traces (by trace id, the same in every service).
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased

    from choreo.observability.tracing import Tracing

    exporter = _DroppingExporter()
    provider = TracerProvider(sampler=ALWAYS_ON if ratio >= 1 else TraceIdRatioBased(ratio))
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]

    def flush() -> int:
        provider.force_flush()
        return exporter.spans

    return [Tracing(provider)], flush


def run_worker(bus: MemoryBus, mode: str) -> tuple[float, dict[str, int]]:
    """Let a worker in ``mode`` handle every record on ``bus``; return CPU seconds and facts."""
    _, stock, _, serde = build()
    middleware: list[Middleware] = []
    checks: dict[str, Callable[[], int]] = {}
    if mode != "off":
        more, checks["scrape_bytes"] = _metrics()
        middleware += more
    if mode.startswith("tracing"):
        more, checks["spans"] = _tracing(0.1 if mode == SAMPLED else 1.0)
        middleware = more + middleware  # outermost, as choreo run orders them
    config = WorkerConfig(poll_timeout=0.0, max_poll_records=BATCH, group_id=f"stock-{mode}")
    worker = Worker(
        stock,
        MemoryTransport(bus),
        serde,
        config=config,
        inbox=MemoryInbox(),
        middleware=middleware,
    )
    worker.start()
    worker.run_once(0.0)  # warm up: join the group, compile codecs (outside the timing)
    _settle()
    started = time.process_time()
    while worker.run_once(0.0):
        pass
    if "spans" in checks:  # the export thread's work belongs to the timed run
        spans = checks["spans"]()
    seconds = time.process_time() - started
    facts = {name: check() for name, check in checks.items() if name != "spans"}
    if "spans" in checks:
        facts["spans"] = spans
    emitted = len(bus.records("bench.shop.ItemReserved"))
    worker.close()
    facts["emitted"] = emitted
    return seconds, facts


def main() -> None:
    """Run the benchmark and print (and by default record) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per mode")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    count = args.events
    modes = ("off", "metrics", "tracing+metrics", SAMPLED)
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    facts: dict[str, dict[str, int]] = {}
    for _ in range(args.repeat):
        for mode in modes:
            gc.unfreeze()
            bus = MemoryBus()
            fill(bus, count)
            taken, facts[mode] = run_worker(bus, mode)
            seconds[mode].append(taken)
            if facts[mode]["emitted"] != count:
                raise RuntimeError(f"{mode}: emitted {facts[mode]['emitted']} of {count}")
    timed = count - BATCH
    rates = {mode: timed / min(values) for mode, values in seconds.items()}
    report = {
        "benchmark": "observability",
        "events": count,
        "best_of": args.repeat,
        "events_per_second": {mode: round(rate) for mode, rate in rates.items()},
        "microseconds_per_event": {mode: round(1e6 / rate, 2) for mode, rate in rates.items()},
        "ratio_vs_off": {mode: round(rate / rates["off"], 3) for mode, rate in rates.items()},
        "added_microseconds_per_event": {
            mode: round(1e6 / rate - 1e6 / rates["off"], 2) for mode, rate in rates.items()
        },
        "facts_of_last_run": facts,
        "clock": "process CPU time (time.process_time, every thread), input frozen out of the GC",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }
    print(json.dumps(report, indent=2))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
