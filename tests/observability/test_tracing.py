"""OpenTelemetry spans from the Tracing middleware: one saga across five services, one trace."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from choreo.model.envelope import Header
from choreo.observability.tracing import Tracing
from choreo.runtime.tracing import parse_traceparent
from services.shop import Shop

from .shop import Cluster


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Return an in-memory exporter."""
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    """Return an SDK tracer provider exporting every span to ``exporter`` at once."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def cluster(shop: Shop, provider: TracerProvider) -> Iterator[Cluster]:
    """Yield the shop's workers with the Tracing middleware on a memory bus."""
    built = Cluster(shop, [Tracing(provider)])
    yield built
    built.close()


def by_trace(spans: tuple[ReadableSpan, ...]) -> dict[int, list[ReadableSpan]]:
    """Return the spans grouped by trace id."""
    grouped: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        assert span.context is not None
        grouped[span.context.trace_id].append(span)
    return grouped


def attribute(span: ReadableSpan, name: str) -> Any:
    """Return one attribute of a span."""
    assert span.attributes is not None
    return span.attributes.get(name)


def test_a_saga_across_five_services_is_one_connected_trace(
    cluster: Cluster, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Each order placed inside a span: its saga's spans form one tree under that span."""
    tracer = provider.get_tracer("test")
    roots = {}
    for index in range(6):
        with tracer.start_as_current_span("place order") as root:
            [order_id] = cluster.place(1, seed=100 + index)
        roots[order_id] = root
    cluster.run_until_idle()
    traces = by_trace(exporter.get_finished_spans())
    assert len(traces) == len(roots)
    services_seen: set[str] = set()
    for order_id, root in roots.items():
        spans = traces[root.get_span_context().trace_id]
        ids = {span.context.span_id for span in spans if span.context is not None}
        orphans = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
        assert [s.name for s in orphans] == ["place order"]  # one tree, one root
        consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
        producers = [s for s in spans if s.kind is SpanKind.PRODUCER]
        assert consumers and producers
        for span in consumers + producers:
            assert attribute(span, "choreo.correlation_id") == order_id
            assert attribute(span, "choreo.saga") == "OrderFulfillment"
            assert attribute(span, "messaging.system") == "kafka"
        services_seen |= {attribute(s, "choreo.service") for s in consumers}
    assert services_seen == {"order", "inventory", "payment", "shipping", "notification"}


def test_span_ids_agree_with_the_traceparent_headers(
    cluster: Cluster, exporter: InMemorySpanExporter
) -> None:
    """A producer span's id is its record's traceparent span id; the next consumer is its child."""
    cluster.place(5, seed=7)
    cluster.run_until_idle()
    spans = exporter.get_finished_spans()
    producers = {
        attribute(s, "messaging.message.id"): s for s in spans if s.kind is SpanKind.PRODUCER
    }
    consumers = {
        attribute(s, "messaging.message.id"): s for s in spans if s.kind is SpanKind.CONSUMER
    }
    records = [r for w in cluster.workers for topic in w.topics for r in cluster.bus.records(topic)]
    checked = 0
    for record in records:
        headers = dict(record.headers)
        event_id = headers[Header.EVENT_ID].decode()
        parsed = parse_traceparent(headers[Header.TRACEPARENT].decode())
        assert parsed is not None
        trace_id, span_id, _ = parsed
        consumer = consumers[event_id]
        assert consumer.parent is not None and consumer.context is not None
        assert f"{consumer.parent.span_id:016x}" == span_id  # child of the header's span
        assert f"{consumer.context.trace_id:032x}" == trace_id
        producer = producers.get(event_id)
        if producer is None:  # a start event: published by the Publisher, no span
            assert headers[Header.ROLE] == b"start"
            continue
        assert producer.context is not None and producer.parent is not None
        assert f"{producer.context.span_id:016x}" == span_id
        assert producer.name == f"create {record.topic}"
        assert attribute(producer, "messaging.destination.name") == record.topic
        checked += 1
    assert checked > 10


def test_consumer_spans_follow_the_messaging_conventions(
    cluster: Cluster, exporter: InMemorySpanExporter
) -> None:
    """A consumer span names its topic and carries partition, offset, group, key and step."""
    [order_id] = cluster.place(1, seed=3)
    cluster.run_until_idle()
    consumer = next(
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.CONSUMER and attribute(s, "choreo.service") == "inventory"
    )
    assert consumer.name == "process shop.orders.OrderCreated"
    assert attribute(consumer, "messaging.operation.type") == "process"
    assert attribute(consumer, "messaging.destination.name") == "shop.orders.OrderCreated"
    assert attribute(consumer, "messaging.destination.partition.id") == "0"
    assert attribute(consumer, "messaging.kafka.offset") == 0
    assert attribute(consumer, "messaging.consumer.group.name") == "inventory"
    assert attribute(consumer, "messaging.kafka.message.key") == order_id
    assert attribute(consumer, "choreo.step") == "inventory.reserve"
    assert attribute(consumer, "choreo.event_type") == "shop.orders.OrderCreated"
    assert attribute(consumer, "choreo.outcome") == "handled"
    assert consumer.status.status_code is StatusCode.UNSET


def test_a_handler_span_made_inside_the_handler_is_a_child_of_the_consumer_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, shop: Shop
) -> None:
    """While a handler runs its consumer span is current: the handler's spans nest under it."""
    from choreo.runtime.middleware import EventInfo, Middleware

    tracer = provider.get_tracer("handler")

    class Inner(Middleware):
        """Opens a span inside the dispatch, as a handler's own code would."""

        def before_dispatch(self, worker: Any, event: EventInfo) -> None:
            with tracer.start_as_current_span("handler work"):
                pass

    cluster = Cluster(shop, [Tracing(provider), Inner()])
    try:
        cluster.place(1, seed=4)
        cluster.run_until_idle()
    finally:
        cluster.close()
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    inner = [s for s in spans if s.name == "handler work"]
    assert inner
    for span in inner:
        assert span.parent is not None
        assert by_id[span.parent.span_id].kind is SpanKind.CONSUMER


def test_a_sampler_that_drops_every_trace_records_nothing_and_changes_nothing(
    shop: Shop, exporter: InMemorySpanExporter
) -> None:
    """With a sampler that keeps no trace: no span exported, the same records published."""
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    provider = TracerProvider(sampler=TraceIdRatioBased(0.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cluster = Cluster(shop, [Tracing(provider)])
    try:
        [order_id] = cluster.place(1, seed=5)
        cluster.run_until_idle()
        headers = [dict(r.headers) for r in cluster.records()]
    finally:
        cluster.close()
    assert exporter.get_finished_spans() == ()
    saga = [h for h in headers if h.get(Header.CORRELATION_ID) == order_id.encode()]
    assert len(saga) >= 5
    traces = {parse_traceparent(h[Header.TRACEPARENT].decode())[0] for h in saga}  # type: ignore[index]
    assert len(traces) == 1  # the headers still carry one trace


def test_spans_nest_per_thread_when_handlers_run_in_a_pool(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """With concurrency 4 each pool thread keeps its own span stack: parents stay right."""
    from runtime.fixtures.events import OrderPlaced
    from runtime.fixtures.serdes import avro_serde
    from runtime.fixtures.shop import ShopState, build_shop

    from choreo.runtime import Publisher, WorkerConfig

    from .shop import NO_WAIT, Workers

    shop = build_shop(ShopState(stock={"book": 10_000}), retry=NO_WAIT)
    config = WorkerConfig(
        poll_timeout=0.0, concurrency=4, topic_partitions=4, retry=NO_WAIT,
        compensation_retry=NO_WAIT,
    )  # fmt: skip
    workers = Workers([shop.inventory], avro_serde(), [Tracing(provider)], config=config)
    publisher = Publisher(shop.orders, workers.transport, avro_serde(), config=config)
    try:
        workers.workers[0].start()
        for number in range(200):
            publisher.start(shop.saga, OrderPlaced(f"o-{number}", "book", 1, 100))
        workers.run_until_idle()
    finally:
        publisher.close()
        workers.close()
    spans = exporter.get_finished_spans()
    consumers = {s.context.span_id: s for s in spans if s.kind is SpanKind.CONSUMER}  # type: ignore[union-attr]
    producers = [s for s in spans if s.kind is SpanKind.PRODUCER]
    assert len(consumers) == len(producers) == 200
    partitions = {attribute(s, "messaging.destination.partition.id") for s in consumers.values()}
    assert partitions == {"0", "1", "2", "3"}
    for producer in producers:
        assert producer.parent is not None
        parent = consumers[producer.parent.span_id]
        assert attribute(parent, "choreo.correlation_id") == attribute(
            producer, "choreo.correlation_id"
        )
