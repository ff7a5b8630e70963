"""Hooks around the worker's steps: :class:`Middleware`, whose methods do nothing by default.

A worker runs the middleware it is given (``Worker(..., middleware=[...])``; None gives
:func:`default_middleware`, i.e. :class:`~choreo.runtime.logging_middleware.LoggingMiddleware`)
at each step of its loop. Every hook gets the worker first; a subclass overrides the hooks
it needs:

====================  ==============================================================
hook                  called
====================  ==============================================================
``before_poll``       before each poll
``after_poll``        after each poll, with the records it returned (maybe none)
``before_dispatch``   per event routed to a handler, before it is decoded and handled,
                      with an :class:`EventInfo` (event type, ids, correlation id,
                      traceparent, the envelope on demand)
``after_dispatch``    per event, once its outcome is known (:class:`Outcome`), with
                      the records it produced and the last error
``after_emit``        per batch, with every record its handlers emitted (events and
                      dead letters), before they are stored and published
``before_commit``     per batch, before delivery commits the store and offsets
``after_commit``      per batch, after delivery committed (not when it raised)
``on_retry``          when a handler attempt failed and is retried after ``delay``
``on_dead_letter``    when a record is dead-lettered, with the reason and error
``on_assign``         when partitions are assigned
``on_revoke``         when partitions are revoked
====================  ==============================================================

``before_*`` and ``on_*`` hooks run in the order the middleware was given, ``after_*``
hooks in reverse order, so a middleware that opens something before a step closes it
after the step inside the ones given before it (spans nest). Hooks run on the thread that
does the step: ``before_dispatch``, ``after_dispatch`` and ``on_retry`` on the handler's
thread (a pool thread with ``concurrency > 1``), so a tracing middleware may make its
span current there and the handler's own spans become its children.

A hook that raises fails the step: inside a batch the batch is rolled back and polled
again, like any infrastructure error.

Only the hooks a middleware overrides are called; with none installed that needs the
per-event hooks, the dispatch loop takes its fast path and pays nothing per event.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from choreo.errors import TransientError
from choreo.model.envelope import Envelope, Header, headers_to_dict
from choreo.runtime.deadletter import DeadLetterReason
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record, TopicPartition

if TYPE_CHECKING:
    from choreo.runtime.worker import Worker

__all__ = [
    "HOOKS",
    "EventInfo",
    "Hooks",
    "LoggingMiddleware",
    "Middleware",
    "Outcome",
    "default_middleware",
]


class Outcome(enum.StrEnum):
    """How the dispatch of one event ended."""

    HANDLED = "handled"
    """The handler succeeded (it may have emitted nothing)."""
    FAILED = "failed"
    """The handler raised a BusinessFailure: the step's failure event was emitted."""
    DEAD_LETTERED = "dead_lettered"
    """Undecodable, or the retry budget ran out: the record went to the dead-letter topic."""
    ABANDONED = "abandoned"
    """The worker stopped during a retry's backoff: the record will be redelivered."""
    DEFERRED = "deferred"
    """A long retry backoff: the record's partition is paused; it is retried when it ends."""


class EventInfo:
    """One event being dispatched: its record and its envelope's ids, read once.

    ``step_id`` is the handling step, ``attempt`` the current attempt (from 1; updated on
    retries) of ``max_attempts``, ``traceparent`` the incoming W3C traceparent (None when
    absent); ``outcome`` and ``error`` are set when the dispatch ends. The full
    :class:`~choreo.model.envelope.Envelope` is built only when :attr:`envelope` is read.
    """

    __slots__ = (
        "_envelope",
        "attempt",
        "correlation_id",
        "error",
        "event_id",
        "event_type",
        "max_attempts",
        "outcome",
        "record",
        "step_id",
        "traceparent",
    )

    def __init__(
        self,
        record: Record,
        *,
        event_type: str,
        event_id: str,
        correlation_id: str,
        traceparent: str | None,
        step_id: str,
        max_attempts: int,
    ) -> None:
        self.record = record
        self.event_type = event_type
        self.event_id = event_id
        self.correlation_id = correlation_id
        self.traceparent = traceparent
        self.step_id = step_id
        self.max_attempts = max_attempts
        self.attempt = 1
        self.outcome = Outcome.HANDLED
        self.error: BaseException | None = None
        self._envelope: Envelope | None = None

    @property
    def envelope(self) -> Envelope:
        """Return the record's envelope (built on first use)."""
        if self._envelope is None:
            self._envelope = Envelope.from_headers(headers_to_dict(self.record.headers))
        return self._envelope

    def __repr__(self) -> str:
        return (
            f"EventInfo({self.event_type!r}, id={self.event_id!r}, "
            f"cid={self.correlation_id!r}, step={self.step_id!r}, attempt={self.attempt})"
        )


class Middleware:
    """A hook around the worker's steps; every method does nothing unless overridden.

    See the module documentation for when each hook runs and in which order.
    """

    def before_poll(self, worker: Worker) -> None:
        """Run before each poll."""

    def after_poll(self, worker: Worker, records: list[Record]) -> None:
        """Run after each poll with the records it returned (maybe none)."""

    def before_dispatch(self, worker: Worker, event: EventInfo) -> None:
        """Run before an event routed to a handler is decoded and handled."""

    def after_dispatch(
        self,
        worker: Worker,
        event: EventInfo,
        outcome: Outcome,
        emitted: Sequence[OutboxRecord],
        error: BaseException | None,
    ) -> None:
        """Run once an event's outcome is known, with what it emitted and the last error."""

    def after_emit(self, worker: Worker, records: Sequence[OutboxRecord]) -> None:
        """Run per batch with every record its handlers emitted, before storing them."""

    def before_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
        """Run before delivery commits a batch (store, output, ``offsets``)."""

    def after_commit(self, worker: Worker, offsets: dict[TopicPartition, int]) -> None:
        """Run after delivery committed a batch."""

    def on_retry(
        self, worker: Worker, event: EventInfo, attempt: int, delay: float, error: Exception
    ) -> None:
        """Run when attempt ``attempt`` of a handler failed and is retried after ``delay`` s."""

    def on_dead_letter(
        self,
        worker: Worker,
        record: Record,
        reason: DeadLetterReason,
        error: BaseException | None,
        attempts: int,
    ) -> None:
        """Run when ``record`` is dead-lettered (``attempts``: handler attempts made, or 0)."""

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Run when partitions are assigned to the worker."""

    def on_revoke(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Run when partitions are revoked from the worker."""


HOOKS: Final = (
    "before_poll",
    "after_poll",
    "before_dispatch",
    "after_dispatch",
    "after_emit",
    "before_commit",
    "after_commit",
    "on_retry",
    "on_dead_letter",
    "on_assign",
    "on_revoke",
)
"""The names of the hooks, in the order of a batch."""


def _overrides(middleware: Middleware, hook: str) -> bool:
    """Return whether ``middleware`` overrides ``hook`` (only those are called)."""
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


class Hooks:
    """The installed middleware as one tuple of bound methods per hook, ready to call.

    Each attribute named after a hook (``before_poll``, ...) holds the methods to call in
    order (``after_*`` ones already reversed); :attr:`dispatch` is True when any
    middleware needs the per-event hooks.
    """

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        self.middleware = tuple(middleware)
        for hook in HOOKS:
            ordered = self.middleware[::-1] if hook.startswith("after_") else self.middleware
            methods = tuple(getattr(m, hook) for m in ordered if _overrides(m, hook))
            setattr(self, hook, methods)
        self.dispatch = bool(self.before_dispatch or self.after_dispatch)

    before_poll: tuple[Any, ...]
    after_poll: tuple[Any, ...]
    before_dispatch: tuple[Any, ...]
    after_dispatch: tuple[Any, ...]
    after_emit: tuple[Any, ...]
    before_commit: tuple[Any, ...]
    after_commit: tuple[Any, ...]
    on_retry: tuple[Any, ...]
    on_dead_letter: tuple[Any, ...]
    on_assign: tuple[Any, ...]
    on_revoke: tuple[Any, ...]


def default_middleware() -> list[Middleware]:
    """Return the middleware a worker runs when given none: logging of its steps."""
    return [LoggingMiddleware()]


# --- the default middleware: the worker's log lines ------------------------------------

_MAX_TEXT = 200  # characters of a header value kept in a log line


class LoggingMiddleware(Middleware):
    """Logs failed attempts, dead letters and partition assignments (see module docs)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("choreo.runtime.worker")

    def on_retry(
        self, worker: Worker, event: EventInfo, attempt: int, delay: float, error: Exception
    ) -> None:
        """Log a failed attempt (warning) with the delay before the next one."""
        self.logger.warning(
            "[%s %s cid=%s] %s attempt %d/%d failed, retrying in %.3f s: %s: %s",
            worker.service.name,
            _text(event.event_type),
            _text(event.correlation_id),
            event.step_id,
            attempt,
            event.max_attempts,
            delay,
            type(error).__name__,
            error,
            extra={
                "service": worker.service.name,
                "event_type": event.event_type,
                "correlation_id": event.correlation_id,
                "event_id": event.event_id,
                "saga": _text(dict(event.record.headers).get(Header.SAGA, b"-")),
                "step": event.step_id,
            },
        )

    def on_dead_letter(
        self,
        worker: Worker,
        record: Record,
        reason: DeadLetterReason,
        error: BaseException | None,
        attempts: int,
    ) -> None:
        """Log a dead letter (error), with the traceback of a non-transient handler error."""
        headers = dict(record.headers)
        event_type = _text(headers.get(Header.EVENT_TYPE, b"-"))
        cid = _text(headers.get(Header.CORRELATION_ID, b"-"))
        where = f"{_text(record.topic)}[{record.partition}]@{record.offset}"
        extra = {  # for structured log formatters (JSON lines)
            "service": worker.service.name,
            "event_type": event_type,
            "correlation_id": cid,
            "event_id": _text(headers.get(Header.EVENT_ID, b"-")),
            "saga": _text(headers.get(Header.SAGA, b"-")),
        }
        if attempts:
            compensation = reason is DeadLetterReason.COMPENSATION_EXHAUSTED
            self.logger.error(
                "[%s %s cid=%s] %s failed %d time(s), dead-lettered to %s%s: %s: %s",
                worker.service.name,
                event_type,
                cid,
                where,
                attempts,
                worker.deadletter_topic,
                " (compensation: needs a human)" if compensation else "",
                type(error).__name__,
                error,
                exc_info=None if isinstance(error, TransientError) else error,
                extra=extra,
            )
            return
        self.logger.error(
            "[%s %s cid=%s] dead-lettering %s to %s: %s: %s",
            worker.service.name,
            event_type,
            cid,
            where,
            worker.deadletter_topic,
            reason.value,
            error,
            extra=extra,
        )

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Log the partitions the worker now owns."""
        self.logger.info("[%s] assigned %s", worker.service.name, _describe(partitions))

    def on_revoke(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        """Log the partitions taken from the worker."""
        self.logger.info("[%s] revoked %s", worker.service.name, _describe(partitions))


def _text(value: str | bytes) -> str:
    """Return a header value or name safe for a log line: escaped and bounded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if len(value) > _MAX_TEXT:
        value = value[:_MAX_TEXT] + "..."
    return value if value.isprintable() else repr(value)[1:-1]


def _describe(partitions: Sequence[TopicPartition]) -> str:
    """Return partitions as ``topic[p]`` items for a log line."""
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
