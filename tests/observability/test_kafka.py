"""On the real broker: one saga across the five services is one trace; partition ends."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from choreo.observability.tracing import Tracing
from choreo.runtime import WorkerConfig, deadletter_topic
from choreo.transports.base import TopicPartition
from choreo.transports.factory import open_transport
from services.shop import Shop

from .shop import NO_WAIT, Cluster

pytestmark = pytest.mark.kafka


@pytest.fixture
def prefix() -> str:
    """Return a topic and group prefix of this test only."""
    return f"obs{uuid.uuid4().hex[:10]}."


@pytest.mark.slow
def test_sagas_over_kafka_are_one_trace_each(kafka_bootstrap: str, prefix: str, shop: Shop) -> None:
    """Three orders through the five services on confluent-kafka: three connected traces."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = WorkerConfig(
        poll_timeout=0.1,
        retry=NO_WAIT,
        compensation_retry=NO_WAIT,
        topic_naming=lambda t: f"{prefix}{t}",
        deadletter_naming=lambda name: f"{prefix}{deadletter_topic(name)}",
    )
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    cluster = Cluster(
        shop, [Tracing(provider)], transport=transport, config=config, group_prefix=prefix
    )
    tracer = provider.get_tracer("test")
    roots = {}
    try:
        for worker in cluster.workers:
            worker.start()
        for index in range(3):
            with tracer.start_as_current_span("place order") as root:
                [order_id] = cluster.place(1, seed=200 + index)
            roots[order_id] = root.get_span_context().trace_id

        def notified() -> bool:
            done = {
                span.attributes.get("choreo.correlation_id")
                for span in exporter.get_finished_spans()
                if span.kind is SpanKind.CONSUMER
                and span.attributes is not None
                and span.attributes.get("choreo.service") == "notification"
            }
            return done >= set(roots)

        cluster.run_until(notified, timeout=120)
    finally:
        cluster.close()
        transport.close()  # type: ignore[attr-defined]
    traces: dict[int, list[object]] = defaultdict(list)
    for span in exporter.get_finished_spans():
        assert span.context is not None and span.attributes is not None
        traces[span.context.trace_id].append(span)
        if span.name != "place order":
            assert roots[str(span.attributes["choreo.correlation_id"])] == span.context.trace_id
    assert set(traces) == set(roots.values())
    for spans in traces.values():
        ids = {span.context.span_id for span in spans}  # type: ignore[attr-defined]
        orphans = [s for s in spans if s.parent is None or s.parent.span_id not in ids]  # type: ignore[attr-defined]
        assert [s.name for s in orphans] == ["place order"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_consumers_report_partition_ends(kafka_bootstrap: str, prefix: str, client: str) -> None:
    """high_watermarks is each partition's next offset to be written, on both clients."""
    transport = open_transport(client, bootstrap=kafka_bootstrap)
    topic = f"{prefix}ends"
    try:
        transport.create_topics([topic], partitions=2)
        producer = transport.producer()
        for number in range(7):
            producer.publish(topic, b"x", key=f"k{number}".encode())
        producer.flush()
        producer.close()
        consumer = transport.consumer(f"{prefix}group")
        try:
            ends = consumer.high_watermarks(  # type: ignore[attr-defined]
                [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            )
        finally:
            consumer.close()
    finally:
        transport.close()  # type: ignore[attr-defined]
    assert set(ends) == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    assert sum(ends.values()) == 7
