"""The worker's log lines about its events as middleware: retries, dead letters, rebalances.

:class:`LoggingMiddleware` is what :func:`~choreo.runtime.middleware.default_middleware`
installs. It logs through the ``choreo.runtime.worker`` logger, each line stamped with the
service, the event type and the correlation id (``[service type cid=...]``); a failed
attempt and a dead letter caused by a :class:`~choreo.errors.TransientError` carry no
traceback, any other error's dead letter does. Every value read from a record is escaped
(``repr``-style) before it is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from choreo.errors import TransientError
from choreo.model.envelope import Header
from choreo.runtime.deadletter import DeadLetterReason
from choreo.runtime.middleware import EventInfo, Middleware
from choreo.transports.base import Record, TopicPartition

if TYPE_CHECKING:
    from choreo.runtime.worker import Worker

__all__ = ["LoggingMiddleware"]

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
