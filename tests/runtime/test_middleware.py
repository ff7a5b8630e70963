"""Middleware hooks: their order, their arguments, and tracing and metrics written as middleware."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from choreo.choreography.service import Retry, Saga, Service
from choreo.errors import BusinessFailure, TransientError
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.runtime.deadletter import DeadLetterReason
from choreo.runtime.logging_middleware import LoggingMiddleware
from choreo.runtime.middleware import EventInfo, Hooks, Middleware, Outcome, default_middleware
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record, TopicPartition
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import (
    OrderCompleted,
    OrderFailed,
    OrderPlaced,
    StockReserved,
    StockUnavailable,
)
from .fixtures.serdes import JsonSerde
from .fixtures.shop import ALL_EVENTS, build_shop
from .helpers import run_until_idle

ORDER_TOPIC = "test.runtime.OrderPlaced"
FAST = WorkerConfig(poll_timeout=0.0)


class Recorder(Middleware):
    """Records every hook call as (name, arguments after the worker)."""

    def __init__(self, name: str = "rec", log: list[tuple[Any, ...]] | None = None) -> None:
        self.name = name
        self.calls: list[tuple[Any, ...]] = [] if log is None else log

    def _add(self, hook: str, *args: Any) -> None:
        self.calls.append((self.name, hook, *args))

    def before_poll(self, worker: Worker) -> None:
        self._add("before_poll")

    def after_poll(self, worker: Worker, records: list[Record]) -> None:
        self._add("after_poll", len(records))

    def before_dispatch(self, worker: Worker, event: EventInfo) -> None:
        self._add("before_dispatch", event.event_type, event.correlation_id, event.attempt)

    def after_dispatch(
        self,
        worker: Worker,
        event: EventInfo,
        outcome: Outcome,
        emitted: Sequence[OutboxRecord],
        error: BaseException | None,
    ) -> None:
        self._add(
            "after_dispatch", event.correlation_id, outcome, [r.topic for r in emitted], error
        )

    def after_emit(self, worker: Worker, records: Sequence[OutboxRecord]) -> None:
        self._add("after_emit", len(records))

    def before_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
        self._add("before_commit", dict(offsets))

    def after_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
        self._add("after_commit", dict(offsets))

    def on_retry(
        self, worker: Worker, event: EventInfo, attempt: int, delay: float, error: Exception
    ) -> None:
        self._add("on_retry", event.correlation_id, attempt, delay, type(error).__name__)

    def on_dead_letter(
        self,
        worker: Worker,
        record: Record,
        reason: DeadLetterReason,
        error: BaseException | None,
        attempts: int,
    ) -> None:
        self._add("on_dead_letter", record.offset, reason, attempts)

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        self._add("on_assign", sorted(partitions))

    def on_revoke(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        self._add("on_revoke", sorted(partitions))


def _service(on_call: Any = None) -> Service:
    """A one-step service whose outcome depends on the order id (ok, flaky, full, broken).

    ``on_call()`` (if given) runs at the start of every handler call.
    """
    attempts: dict[str, int] = {}
    saga = Saga("Fulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    service = Service("odd", sagas=[saga])

    @service.step(
        on=OrderPlaced,
        emits=StockReserved,
        fails_with=StockUnavailable,
        retry=Retry(max_attempts=2, backoff=0.0, jitter=False),
    )
    def reserve(event: OrderPlaced) -> StockReserved:
        if on_call is not None:
            on_call()
        attempts[event.order_id] = attempts.get(event.order_id, 0) + 1
        if event.order_id == "flaky" and attempts["flaky"] == 1:
            raise TransientError("try again")
        if event.order_id == "full":
            raise BusinessFailure(StockUnavailable("full", "sold out"))
        if event.order_id == "broken":
            raise RuntimeError("always")
        return StockReserved(event.order_id, event.sku, event.quantity)

    return service


def _start(transport: MemoryTransport, serde: Any, *order_ids: str) -> list[str]:
    shop = build_shop()
    publisher = Publisher(shop.orders, transport, serde)
    return [publisher.start(shop.saga, OrderPlaced(o, "book", 1, 1)) for o in order_ids]


def test_hooks_see_one_batch_in_order_with_their_arguments() -> None:
    """One batch of ok, flaky, full, broken and garbage records calls every hook in order."""
    transport = MemoryTransport(MemoryBus())
    serde = JsonSerde(ALL_EVENTS)
    recorder = Recorder()
    worker = Worker(_service(), transport, serde, config=FAST, middleware=[recorder])
    worker.start()
    ok, flaky, full, broken = _start(transport, serde, "ok", "flaky", "full", "broken")
    headers = next(r for r in transport.bus.records(ORDER_TOPIC)).headers
    garbage = [(n, v) if n != Header.EVENT_ID else (n, b"garbage-id") for n, v in headers]
    transport.producer().publish(ORDER_TOPIC, b"\x00not json", key=b"g", headers=garbage)

    assert worker.run_once(0.0) == 5
    worker.close()
    tp = TopicPartition(ORDER_TOPIC, 0)
    reserved, unavailable = "test.runtime.StockReserved", "test.runtime.StockUnavailable"
    dlq = "choreo.deadletter.odd"
    assert [c[1:] for c in recorder.calls] == [
        ("before_poll",),
        ("on_assign", [tp]),
        ("after_poll", 5),
        ("before_dispatch", ORDER_TOPIC, ok, 1),
        ("after_dispatch", ok, Outcome.HANDLED, [reserved], None),
        ("before_dispatch", ORDER_TOPIC, flaky, 1),
        ("on_retry", flaky, 1, 0.0, "TransientError"),
        ("after_dispatch", flaky, Outcome.HANDLED, [reserved], None),
        ("before_dispatch", ORDER_TOPIC, full, 1),
        ("after_dispatch", full, Outcome.FAILED, [unavailable], recorder.calls[9][-1]),
        ("before_dispatch", ORDER_TOPIC, broken, 1),
        ("on_retry", broken, 1, 0.0, "RuntimeError"),
        ("on_dead_letter", 3, DeadLetterReason.RETRIES_EXHAUSTED, 2),
        ("after_dispatch", broken, Outcome.DEAD_LETTERED, [dlq], recorder.calls[13][-1]),
        ("before_dispatch", ORDER_TOPIC, ok, 1),
        ("on_dead_letter", 4, DeadLetterReason.UNDECODABLE, 0),
        ("after_dispatch", ok, Outcome.DEAD_LETTERED, [dlq], recorder.calls[16][-1]),
        ("after_emit", 5),
        ("before_commit", {tp: 5}),
        ("after_commit", {tp: 5}),
        ("on_revoke", [tp]),
    ]
    assert isinstance(recorder.calls[9][-1], BusinessFailure)
    assert isinstance(recorder.calls[13][-1], RuntimeError)
    assert type(recorder.calls[16][-1]).__name__ == "DecodeError"


def test_before_hooks_run_in_order_and_after_hooks_in_reverse() -> None:
    """Given [outer, inner], befores run outer first and afters inner first (spans nest)."""
    transport = MemoryTransport(MemoryBus())
    serde = JsonSerde(ALL_EVENTS)
    log: list[tuple[Any, ...]] = []
    worker = Worker(
        _service(),
        transport,
        serde,
        config=FAST,
        middleware=[Recorder("outer", log), Recorder("inner", log)],
    )
    _start(transport, serde, "ok")
    run_until_idle([worker])
    worker.close()
    names = [
        (c[0], c[1])
        for c in log
        if c[1] in ("before_dispatch", "after_dispatch", "before_commit", "after_commit")
    ]
    assert names == [
        ("outer", "before_dispatch"),
        ("inner", "before_dispatch"),
        ("inner", "after_dispatch"),
        ("outer", "after_dispatch"),
        ("outer", "before_commit"),
        ("inner", "before_commit"),
        ("inner", "after_commit"),
        ("outer", "after_commit"),
    ]


def test_only_overridden_hooks_are_installed_and_logging_keeps_the_fast_path() -> None:
    """Hooks holds only overriding methods; the default middleware adds no per-event hook."""
    hooks = Hooks(default_middleware())
    assert hooks.dispatch is False
    assert hooks.before_dispatch == () and hooks.after_dispatch == ()
    assert len(hooks.on_retry) == len(hooks.on_dead_letter) == 1
    assert isinstance(hooks.middleware[0], LoggingMiddleware)
    assert Hooks([Middleware()]).dispatch is False
    assert Hooks([Recorder()]).dispatch is True


def test_a_failing_hook_rolls_the_batch_back_and_it_is_handled_again() -> None:
    """A before_commit hook that raises leaves the batch uncommitted; the next poll redoes it."""

    class FailOnce(Middleware):
        failed = False

        def before_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("metrics backend down")

    bus = MemoryBus()
    transport = MemoryTransport(bus)
    serde = JsonSerde(ALL_EVENTS)
    worker = Worker(_service(), transport, serde, config=FAST, middleware=[FailOnce()])
    _start(transport, serde, "ok")
    with pytest.raises(RuntimeError, match="metrics backend down"):
        worker.run_once(0.0)
    assert bus.records("test.runtime.StockReserved") == []
    assert run_until_idle([worker]) == 1
    assert len(bus.records("test.runtime.StockReserved")) == 1
    worker.close()


def test_a_span_per_handled_event_is_written_as_middleware() -> None:
    """OpenTelemetry: one span per event, parented by its traceparent, current in the handler."""
    trace = pytest.importorskip("opentelemetry.trace")
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    propagate = pytest.importorskip("opentelemetry.trace.propagation.tracecontext")
    otel_context = pytest.importorskip("opentelemetry.context")

    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("choreo.test")
    propagator = propagate.TraceContextTextMapPropagator()
    seen_in_handler: list[int] = []

    class Tracing(Middleware):
        def __init__(self) -> None:
            self.open = threading.local()

        def before_dispatch(self, worker: Worker, event: EventInfo) -> None:
            carrier = {"traceparent": event.traceparent} if event.traceparent else {}
            span = tracer.start_span(
                f"{worker.service.name} {event.step_id}",
                context=propagator.extract(carrier),
                attributes={"choreo.correlation_id": event.correlation_id},
            )
            self.open.span = span
            self.open.token = otel_context.attach(trace.set_span_in_context(span))

        def after_dispatch(
            self,
            worker: Worker,
            event: EventInfo,
            outcome: Outcome,
            emitted: Sequence[OutboxRecord],
            error: BaseException | None,
        ) -> None:
            otel_context.detach(self.open.token)
            span = self.open.span
            span.set_attribute("choreo.outcome", outcome.value)
            if error is not None:
                span.record_exception(error)
            span.end()

    transport = MemoryTransport(MemoryBus())
    serde = JsonSerde(ALL_EVENTS)
    service = _service(
        lambda: seen_in_handler.append(trace.get_current_span().get_span_context().span_id)
    )
    worker = Worker(service, transport, serde, config=FAST, middleware=[Tracing()])
    cids = _start(transport, serde, "ok", "broken")
    run_until_idle([worker])
    worker.close()
    spans = exporter.get_finished_spans()
    assert [s.attributes["choreo.correlation_id"] for s in spans] == cids
    assert [s.attributes["choreo.outcome"] for s in spans] == ["handled", "dead_lettered"]
    assert [s.name for s in spans] == ["odd odd.reserve", "odd odd.reserve"]
    assert seen_in_handler[0] == spans[0].context.span_id
    for span, record in zip(spans, transport.bus.records(ORDER_TOPIC), strict=True):
        parent = headers_to_dict(record.headers)[Header.TRACEPARENT].decode()
        assert span.parent is not None
        assert f"{span.parent.trace_id:032x}" == parent.split("-")[1]


def test_a_metric_per_event_type_is_written_as_middleware() -> None:
    """Prometheus: a counter of handled events by type and outcome, from after_dispatch."""
    prometheus = pytest.importorskip("prometheus_client")
    registry = prometheus.CollectorRegistry()
    handled = prometheus.Counter(
        "choreo_events_handled", "events handled", ["event_type", "outcome"], registry=registry
    )

    class Metrics(Middleware):
        def after_dispatch(
            self,
            worker: Worker,
            event: EventInfo,
            outcome: Outcome,
            emitted: Sequence[OutboxRecord],
            error: BaseException | None,
        ) -> None:
            handled.labels(event.event_type, outcome.value).inc()

    transport = MemoryTransport(MemoryBus())
    serde = JsonSerde(ALL_EVENTS)
    worker = Worker(_service(), transport, serde, config=FAST, middleware=[Metrics()])
    _start(transport, serde, "ok", "ok2", "full")
    run_until_idle([worker])
    worker.close()

    def value(outcome: str) -> float | None:
        labels = {"event_type": ORDER_TOPIC, "outcome": outcome}
        return registry.get_sample_value("choreo_events_handled_total", labels)

    assert value("handled") == 2
    assert value("failed") == 1
