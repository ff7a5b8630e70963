"""OpenTelemetry traces of workers, as a :class:`~choreo.runtime.middleware.Middleware`.

``Tracing()`` (the ``choreo[otel]`` extra) makes spans from what a worker does, following
the OpenTelemetry semantic conventions for messaging systems:

- a **consumer span** ``process <topic>`` per handled event, the child of the span that
  produced the event: its parent is the event's W3C ``traceparent`` header. The span is
  current while the handler runs, so a handler's own spans (an HTTP call, a database
  query) are its children;
- a **producer span** ``create <topic>`` per emitted event, the child of the consumer
  span, whose span id IS the span id of the ``traceparent`` choreo writes on that event
  (:mod:`choreo.runtime.tracing` derives it from the event's id). The next service's
  consumer span is therefore the child of this producer span, and a saga that crosses
  five services is one trace, one tree.

Attributes: ``messaging.system`` (``kafka``), ``messaging.operation.type`` and
``messaging.operation.name`` (``process`` / ``create``), ``messaging.destination.name``
(the topic), ``messaging.destination.partition.id``, ``messaging.consumer.group.name``,
``messaging.kafka.offset``, ``messaging.kafka.message.key`` (the correlation id),
``messaging.message.id`` (the event id), ``messaging.message.body.size``; and choreo's own
``choreo.service``, ``choreo.saga``, ``choreo.correlation_id``, ``choreo.step``,
``choreo.event_type``, ``choreo.outcome``. Retries are span events (``retry``); a dead
letter or a handler error sets the consumer span's status to ERROR and records the
exception.

Making a producer span's id equal to the header's needs the OpenTelemetry SDK: the
tracer's id generator is wrapped so that it hands out the chosen id for that one span
(:class:`ChosenIds`); with another API implementation producer spans keep ids of their
own and the consumer spans still share the trace. Events without a valid traceparent
(tracing off upstream, or a foreign producer) start a new trace.

Cost: nothing unless a ``Tracing`` is installed (the worker then takes its per-event hook
path); the ``opentelemetry`` packages are imported only when one is created.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from choreo._version import __version__
from choreo.model.envelope import Header
from choreo.runtime.middleware import EventInfo, Middleware, Outcome
from choreo.runtime.tracing import parse_traceparent
from choreo.store.outbox import OutboxRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from choreo.runtime.worker import Worker

__all__ = ["ChosenIds", "Tracing", "remote_parent"]

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.27.0"
"""The semantic conventions version the attribute names follow."""

_MAX_VALUE: Final = 256  # bound on attribute values taken from records
_SAGA: Final = Header.SAGA
_STEP: Final = Header.STEP
_TRACE: Final = Header.TRACEPARENT
_ID: Final = Header.EVENT_ID
_TYPE: Final = Header.EVENT_TYPE
_PRODUCER_HEADERS: Final = (
    (_TYPE, "choreo.event_type"),
    (_SAGA, "choreo.saga"),
    (_STEP, "choreo.step"),
)


class ChosenIds:
    """An OpenTelemetry id generator that hands out a chosen span id once, else its inner one.

    :meth:`choose` sets the span (and trace) id the next span started on this thread
    gets; every other id comes from ``inner`` (the SDK's random generator).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._local = threading.local()

    def choose(self, span_id: int, trace_id: int | None = None) -> None:
        """Make the next span started on this thread get ``span_id`` (and ``trace_id``)."""
        self._local.span_id = span_id
        self._local.trace_id = trace_id

    def forget(self) -> None:
        """Drop a chosen id that no span took (e.g. the tracer was disabled)."""
        self._local.span_id = self._local.trace_id = None

    def generate_span_id(self) -> int:
        """Return the chosen span id once, else a new one from the inner generator."""
        chosen: int | None = getattr(self._local, "span_id", None)
        if chosen is not None:
            self._local.span_id = None
            return chosen
        return int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        """Return the chosen trace id once (a root span), else a new one."""
        chosen: int | None = getattr(self._local, "trace_id", None)
        if chosen is not None:
            self._local.trace_id = None
            return chosen
        return int(self.inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        """Say what the inner generator says (W3C Trace Context level 2 flag)."""
        method = getattr(self.inner, "is_trace_id_random", None)
        return bool(method()) if method is not None else False


def remote_parent(traceparent: str | bytes | None) -> Any:
    """Return an OpenTelemetry context whose current span is ``traceparent``'s, or None.

    None (a new trace) for a missing or invalid traceparent.
    """
    if traceparent is None:
        return None
    text = traceparent.decode("ascii", "replace") if isinstance(traceparent, bytes) else traceparent
    parsed = parse_traceparent(text)
    if parsed is None:
        return None
    from opentelemetry import trace

    trace_id, span_id, flags = parsed
    parent = trace.SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(flags, 16) & 0xFF),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    """Return the last value of header ``name`` as bounded text, or None."""
    for key, value in reversed(headers):
        if key == name:
            return value[:_MAX_VALUE].decode("utf-8", "replace")
    return None


class _Open:
    """A consumer span in progress on one thread, and the context token to restore."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: Any) -> None:
        self.span = span
        self.token = token


class Tracing(Middleware):
    """Consumer and producer spans for every event a worker handles (see the module docs).

    ``tracer_provider`` defaults to OpenTelemetry's global one: set it up (or run under
    ``opentelemetry-instrument``) before creating the middleware. Raises ImportError
    when ``opentelemetry-api`` is not installed.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        from opentelemetry import context, trace

        self._trace = trace
        self._context = context
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer: Tracer = provider.get_tracer("choreo", __version__, schema_url=SCHEMA_URL)
        self.ids: ChosenIds | None = None
        inner = getattr(self.tracer, "id_generator", None)
        if inner is not None:  # the SDK's tracer: producer span ids can be chosen
            self.ids = ChosenIds(inner)
            self.tracer.id_generator = self.ids  # type: ignore[attr-defined]
        self._local = threading.local()

    # --- consumer spans ------------------------------------------------------------

    def before_dispatch(self, worker: Worker, event: EventInfo) -> None:
        """Start the event's consumer span as the child of its producer; make it current."""
        record = event.record
        trace = self._trace
        span = self.tracer.start_span(
            f"process {record.topic}",
            context=remote_parent(event.traceparent),
            kind=trace.SpanKind.CONSUMER,
            attributes={  # what a sampler may look at; the rest only when recorded
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
            },
        )
        if span.is_recording():
            attributes: dict[str, Any] = {
                "messaging.operation.name": "process",
                "messaging.destination.partition.id": str(record.partition),
                "messaging.consumer.group.name": worker.group_id,
                "messaging.kafka.offset": record.offset,
                "messaging.message.id": event.event_id,
                "messaging.kafka.message.key": event.correlation_id[:_MAX_VALUE],
                "messaging.message.body.size": len(record.value or b""),
                "choreo.service": worker.service.name,
                "choreo.event_type": event.event_type,
                "choreo.correlation_id": event.correlation_id[:_MAX_VALUE],
                "choreo.step": event.step_id,
            }
            saga = _header(record.headers, _SAGA)
            if saga is not None:
                attributes["choreo.saga"] = saga
            span.set_attributes(attributes)
        token = self._context.attach(trace.set_span_in_context(span))
        stack: list[_Open] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(_Open(span, token))

    def on_retry(
        self, worker: Worker, event: EventInfo, attempt: int, delay: float, error: Exception
    ) -> None:
        """Add a ``retry`` event to the consumer span."""
        stack: list[_Open] | None = getattr(self._local, "stack", None)
        if stack:
            stack[-1].span.add_event(
                "retry",
                {
                    "choreo.attempt": attempt,
                    "choreo.retry_delay_s": delay,
                    "exception.type": type(error).__qualname__,
                },
            )

    def after_dispatch(
        self,
        worker: Worker,
        event: EventInfo,
        outcome: Outcome,
        emitted: Sequence[OutboxRecord],
        error: BaseException | None,
    ) -> None:
        """Add a producer span per emitted event, set the outcome, end the consumer span."""
        stack: list[_Open] = self._local.stack
        current = stack.pop()
        span = current.span
        try:
            span.set_attribute("choreo.outcome", outcome.value)
            if span.is_recording():  # a trace sampled out makes no producer spans either
                deadletter = worker.deadletter_topic
                parent = self._trace.set_span_in_context(span)
                for record in emitted:
                    if record[1] != deadletter:
                        self._producer_span(worker, record, parent)
            if outcome is Outcome.DEAD_LETTERED:
                self._failed(span, error, "dead-lettered")
            elif error is not None and outcome is not Outcome.FAILED:
                self._failed(span, error, type(error).__qualname__)
        finally:
            span.end()
            self._context.detach(current.token)

    def _failed(self, span: Span, error: BaseException | None, description: str) -> None:
        """Mark ``span`` as failed, recording ``error`` when there is one."""
        if error is not None:
            span.record_exception(error)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description))

    # --- producer spans ------------------------------------------------------------

    def _producer_span(self, worker: Worker, record: OutboxRecord, parent: Any) -> None:
        """Start and end the ``create`` span of one emitted record, with the header's span id."""
        event_id, topic, key, value, headers = record
        traceparent = _header(headers, _TRACE)
        parsed = parse_traceparent(traceparent) if traceparent is not None else None
        if parsed is not None and self.ids is not None:
            self.ids.choose(int(parsed[1], 16))
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
            "messaging.destination.name": topic,
            "messaging.message.id": event_id,
            "messaging.message.body.size": len(value or b""),
            "choreo.service": worker.service.name,
        }
        if key is not None:
            attributes["messaging.kafka.message.key"] = key[:_MAX_VALUE].decode("utf-8", "replace")
            attributes["choreo.correlation_id"] = attributes["messaging.kafka.message.key"]
        for name, attribute in _PRODUCER_HEADERS:
            text = _header(headers, name)
            if text is not None:
                attributes[attribute] = text
        try:
            span = self.tracer.start_span(
                f"create {topic}",
                context=parent,
                kind=self._trace.SpanKind.PRODUCER,
                attributes=attributes,
            )
        finally:
            if self.ids is not None:
                self.ids.forget()
        span.end()
