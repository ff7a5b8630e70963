"""Calling one handler: retries with backoff, business failures, giving up to a dead letter.

An :class:`Invoker` runs the handler of one decoded event until it has an outcome:

- success: the records of the events it returned or queued with ``ctx.emit``;
- :class:`~choreo.errors.BusinessFailure`: the record of the step's declared failure event;
- any other exception: the same record is retried after an exponential backoff (which
  blocks its partition and keeps per-key order), until the step's retry budget is spent;
  then its dead letter (:mod:`choreo.runtime.deadletter`);
- a database error that dooms the batch's transaction (SQLSTATE class 40: a deadlock or
  a serialization failure) is raised at once: retrying in a savepoint would keep the
  locks the batch already holds and meet the same deadlock again, so the whole batch is
  rolled back (releasing them) and polled again, never dead-lettered;
- the worker stopped during a backoff: None, the record stays unhandled and is
  redelivered later;
- a backoff longer than ``max_inline_backoff``: None too, but the retry is *deferred*:
  the next attempt number is kept under the record's event id and the record's
  partition in :attr:`Invoker.deferred` with the time its backoff ends; the worker
  rewinds and pauses that partition and keeps polling, and the redelivered record
  continues with that attempt.

Handlers that take a context get a fresh one per attempt; with a database, each attempt
runs in a savepoint that a failed attempt rolls back. The hot path (a handler without a
context that succeeds at once) is inlined in :mod:`choreo.runtime.dispatch`, which calls
:meth:`Invoker.after_failure` only when that first attempt raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from choreo.choreography.service import StepKind
from choreo.errors import BusinessFailure
from choreo.model.envelope import now_ms
from choreo.model.events import Event
from choreo.runtime.deadletter import DeadLetterReason, dead_letter_record
from choreo.runtime.emit import Emitter, as_events, failure_event
from choreo.runtime.handler_context import new_context, settle
from choreo.runtime.incidents import rolls_back_transaction
from choreo.runtime.middleware import EventInfo, Hooks, Outcome
from choreo.runtime.refusal import CommandRefusedError
from choreo.runtime.retry import backoff_delay
from choreo.runtime.routing import Fields, Route
from choreo.store import Inbox
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record

__all__ = ["Invoker", "event_info"]

logger = logging.getLogger("choreo.runtime.worker")

_T = TypeVar("_T")
_MAX_DEFERRED = 10_000  # attempt counts of deferred retries kept at most

Item = tuple[Record, Fields]
"""A polled record and its checked envelope (see :func:`~choreo.runtime.routing.scan_headers`)."""


def event_info(route: Route, item: Item) -> EventInfo:
    """Return the :class:`EventInfo` middleware gets for ``item`` handled by ``route``."""
    record, fields = item
    trace = fields[3]
    return EventInfo(
        record,
        event_type=fields[0],
        event_id=fields[1],
        correlation_id=fields[5][1].decode("utf-8", "replace"),
        traceparent=None if trace is None else trace.decode("ascii", "replace"),
        step_id=route.step_id,
        max_attempts=route.retry.max_attempts,
    )


class Invoker:
    """Runs one handler to an outcome (see the module documentation).

    ``wait(seconds)`` sleeps out a backoff and returns True when the worker was stopped
    meanwhile; ``hooks`` are the worker's middleware, called with ``worker``.
    """

    def __init__(
        self,
        *,
        worker: object,
        service: str,
        emitter: Emitter,
        deadletter_topic: str,
        wait: Callable[[float], bool],
        hooks: Hooks,
        max_inline_backoff: float = float("inf"),
    ) -> None:
        self.worker = worker
        self.service = service
        self.emitter = emitter
        self.deadletter_topic = deadletter_topic
        self.wait = wait
        self.hooks = hooks
        self.max_inline_backoff = max_inline_backoff
        self.attempts: dict[str, int] = {}  # event id -> next attempt of a deferred retry
        self.deferred: dict[tuple[str, int], float] = {}  # partition -> monotonic resume time

    def take_deferred(self) -> dict[tuple[str, int], float]:
        """Return and forget the partitions deferred since the last call, with resume times."""
        deferred, self.deferred = self.deferred, {}
        return deferred

    def invoke(
        self,
        route: Route,
        item: Item,
        event: Event,
        inbox: Inbox | None,
        *,
        info: EventInfo | None,
        attempt: int = 1,
    ) -> list[OutboxRecord] | None:
        """Call a handler that takes a context, with retries; return its outbox records.

        ``inbox`` provides ``ctx.db`` (None: none); ``info`` (when middleware dispatch
        hooks are installed) receives the outcome; ``attempt`` is the first attempt's
        number (above 1 for a deferred retry).
        """
        func = route.func
        emit = self.emitter.emit
        headers = dict(item[0].headers)
        while True:
            ctx = new_context(headers, self.service, attempt, inbox, route.logger)
            try:
                result = func(event, ctx)
                queued = ctx._emitted
                if result is None:
                    events = queued
                elif isinstance(result, Event):
                    events = [*queued, result]
                else:
                    events = as_events(route.step_id, queued, result)
                emitted = emit(route, item[1], events) if events else []
            except BusinessFailure as failure:
                settle(ctx, keep=False)
                try:
                    records = emit(route, item[1], [failure_event(route, failure)])
                except Exception as exc:
                    error = exc
                else:
                    return _ended(info, Outcome.FAILED, failure, records)
            except Exception as exc:
                settle(ctx, keep=False)
                if rolls_back_transaction(exc):
                    raise
                error = exc
            else:
                settle(ctx, keep=True)
                return emitted
            if attempt >= route.retry.max_attempts or isinstance(error, CommandRefusedError):
                return self._give_up(route, item, error, attempt, info)
            if not self._wait_to_retry(route, item, error, attempt, info):
                return None
            attempt += 1

    def after_failure(
        self,
        route: Route,
        item: Item,
        event: Event,
        error: Exception,
        *,
        info: EventInfo | None,
        attempt: int = 1,
    ) -> list[OutboxRecord] | None:
        """Finish a context-less handler whose attempt ``attempt`` raised ``error`` (see invoke).

        A :class:`~choreo.errors.BusinessFailure` emits the declared failure event; any
        other error is retried with backoff until the budget runs out (then dead letter).
        """
        func = route.func
        emitter = self.emitter
        while True:
            if isinstance(error, BusinessFailure):
                try:
                    records = emitter.emit(route, item[1], [failure_event(route, error)])
                except Exception as exc:
                    error = exc
                else:
                    return _ended(info, Outcome.FAILED, error, records)
            if attempt >= route.retry.max_attempts:
                return self._give_up(route, item, error, attempt, info)
            if not self._wait_to_retry(route, item, error, attempt, info):
                return None
            attempt += 1
            try:
                result = func(event)
                if isinstance(result, Event):
                    return [emitter.emit_one(route, item[1], result)]
                if result is None:
                    return []
                return emitter.emit(route, item[1], as_events(route.step_id, [], result))
            except Exception as exc:
                error = exc

    def _wait_to_retry(
        self, route: Route, item: Item, error: Exception, attempt: int, info: EventInfo | None
    ) -> bool:
        """Report a failed attempt and wait out (or defer) its backoff.

        Returns False when the retry does not happen now: the worker stopped meanwhile
        (outcome ABANDONED) or the backoff is longer than ``max_inline_backoff`` (DEFERRED).
        """
        delay = backoff_delay(route.retry, attempt)
        if self.hooks.on_retry:
            if info is None:
                info = event_info(route, item)
            info.attempt = attempt
            for hook in self.hooks.on_retry:
                hook(self.worker, info, attempt, delay, error)
        if delay > self.max_inline_backoff:
            record = item[0]
            if len(self.attempts) >= _MAX_DEFERRED:  # records that moved to another member
                self.attempts.clear()
            self.attempts[item[1][1]] = attempt + 1
            where = (record.topic, record.partition)
            self.deferred[where] = max(self.deferred.get(where, 0.0), time.monotonic() + delay)
            _ended(info, Outcome.DEFERRED, error, None)
            return False
        if self.wait(delay):
            _ended(info, Outcome.ABANDONED, error, None)
            logger.info(
                "[%s %s cid=%r] stopping: %r left for redelivery",
                self.service,
                item[1][0],
                item[1][5][1].decode("utf-8", "replace")[:200],
                item[1][1][:200],
            )
            return False
        if info is not None:
            info.attempt = attempt + 1
        return True

    def _give_up(
        self, route: Route, item: Item, error: Exception, attempts: int, info: EventInfo | None
    ) -> list[OutboxRecord]:
        """Return the dead letter of a record whose handler exhausted its retry budget."""
        reason = (
            DeadLetterReason.REFUSED  # a late command: recorded, never retried
            if isinstance(error, CommandRefusedError)
            else DeadLetterReason.COMPENSATION_EXHAUSTED
            if route.spec.kind is StepKind.COMPENSATION
            else DeadLetterReason.RETRIES_EXHAUSTED
        )
        letter = self.dead_letter(item[0], reason, error, attempts)
        return _ended(info, Outcome.DEAD_LETTERED, error, [letter])

    def dead_letter(
        self, record: Record, reason: DeadLetterReason, error: BaseException | None, attempts: int
    ) -> OutboxRecord:
        """Return the dead letter of ``record`` and tell the middleware about it."""
        for hook in self.hooks.on_dead_letter:
            hook(self.worker, record, reason, error, attempts)
        return dead_letter_record(
            record,
            topic=self.deadletter_topic,
            reason=reason,
            error=error,
            service=self.service,
            attempts=attempts,
            failed_at_ms=now_ms(),
        )


def _ended(info: EventInfo | None, outcome: Outcome, error: BaseException | None, result: _T) -> _T:
    """Record ``outcome`` and ``error`` on ``info`` (if any) and return ``result``."""
    if info is not None:
        info.outcome = outcome
        info.error = error
    return result
