"""Dispatch of a polled batch to the handlers: decode, dedupe, invoke, retry, dead-letter.

A :class:`Dispatcher` handles the records of one batch in partition order and returns a
:class:`BatchOutput`: the outbox records to publish (emitted events and dead letters),
the inbox keys of the records handled, and the next offset of each partition.

- **Dedupe**: a first pass reads every record's envelope
  (:func:`~choreo.runtime.routing.scan_headers`) and its inbox key (the event id) for one
  batched :meth:`~choreo.runtime.inbox.Inbox.seen` query; records already handled are
  dropped.
- **Invoke**: the handler of the record's event type is called with the decoded event
  (and a :class:`~choreo.runtime.handler_context.HandlerContext` when it takes one, whose
  ``ctx.db`` is the inbox's connection inside a savepoint per attempt).
- **Retries**: an exception from a handler (:class:`~choreo.errors.TransientError` or any
  other) is retried on the same record with exponential backoff, which blocks its
  partition and keeps per-key order. A stop during a backoff abandons the rest of the
  partition's batch: the record is redelivered later.
- **Business failures**: :class:`~choreo.errors.BusinessFailure` emits the step's
  declared failure event.
- **Dead letters**: an undecodable record, a broken envelope, an unknown event type or an
  exhausted budget goes to the dead-letter topic (see :mod:`choreo.runtime.deadletter`),
  and the batch moves past it.

With a thread pool, the partitions of a batch are handled on its threads (one partition
per thread, in order); handlers then get ``ctx.db = None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from choreo.choreography.service import StepKind
from choreo.errors import BusinessFailure, EnvelopeError, TransientError, UnknownEventError
from choreo.model.context import EventLogger
from choreo.model.envelope import Header, now_ms
from choreo.model.events import Event
from choreo.runtime.deadletter import DeadLetterReason, dead_letter_id, dead_letter_record
from choreo.runtime.emit import Emitter, as_events, failure_event
from choreo.runtime.handler_context import new_context, settle
from choreo.runtime.inbox import Inbox
from choreo.runtime.outbox import OutboxRecord
from choreo.runtime.retry import backoff_delay
from choreo.runtime.routing import Fields, Route, fields_from, scan_headers
from choreo.runtime.tracing import all_valid
from choreo.transports.base import Record

__all__ = ["BatchOutput", "Dispatcher", "inbox_key"]

logger = logging.getLogger("choreo.runtime.worker")

_ID = Header.EVENT_ID

_Item = tuple[Record, Fields]
"""A polled record and its checked envelope (see :func:`~choreo.runtime.routing.scan_headers`)."""

_NOTHING: Final[list[OutboxRecord]] = []  # "handled, nothing more to add" (never mutated)


@dataclass(slots=True)
class BatchOutput:
    """What handling part of a batch produced: outbox records, handled ids, next offsets.

    ``abandoned`` is True when the worker stopped during a retry's backoff: the records
    from the abandoned one on were not handled and their offsets are not in
    ``next_offsets``.
    """

    records: list[OutboxRecord] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    abandoned: bool = False


class Dispatcher:
    """Hands each record of a batch to its handler and collects the output (see module docs).

    ``wait(seconds)`` sleeps out a retry's backoff and returns True when the worker was
    stopped meanwhile. ``executor`` (optional) handles partitions in parallel.
    """

    def __init__(
        self,
        *,
        service: str,
        group_id: str,
        routes: Mapping[str, Route],
        decode: Callable[[str, bytes], Event],
        emitter: Emitter,
        inbox: Inbox,
        deadletter_topic: str,
        wait: Callable[[float], bool],
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.service = service
        self.group_id = group_id
        self.routes = routes
        self.decode = decode
        self.emitter = emitter
        self.inbox = inbox
        self.deadletter_topic = deadletter_topic
        self.wait = wait
        self.executor = executor
        self._log = EventLogger(
            logger, {"service": service, "event_type": "-", "correlation_id": "-"}
        )

    def dispatch(self, records: list[Record]) -> BatchOutput:
        """Handle the records in order (or per partition in the pool) and collect the output.

        A first pass reads each record's envelope (:func:`scan_headers`) and inbox key (its
        event id) for one batched :meth:`Inbox.seen` query; the second handles one record
        at a time.
        """
        scanned = [scan_headers(record.headers) for record in records]
        # traceparents checked for the whole batch at once; b"" (invalid) when a record
        # takes the slow path, so that batch's traceparents are checked one by one
        emitter = self.emitter
        emitter.traces_valid = emitter.tracing and all_valid(
            [fields[3] if fields is not None else b"" for fields in scanned]
        )
        keys = [
            fields[1] if fields is not None else inbox_key(record)
            for record, fields in zip(records, scanned, strict=True)
        ]
        seen = self.inbox.seen(self.group_id, keys)
        if self.executor is None:
            output = BatchOutput()
            self._sequence(records, keys, scanned, seen=seen, output=output, inbox=self.inbox)
            return output
        return self._in_pool(records, keys, scanned, seen)

    def _in_pool(
        self,
        records: list[Record],
        keys: list[str],
        scanned: list[Fields | None],
        seen: set[str],
    ) -> BatchOutput:
        """Handle each partition's records on a pool thread; merge in partition order."""
        assert self.executor is not None
        groups: dict[tuple[str, int], tuple[list[Record], list[str], list[Fields | None]]] = {}
        for record, key, fields in zip(records, keys, scanned, strict=True):
            group = groups.get((record.topic, record.partition))
            if group is None:
                group = groups[(record.topic, record.partition)] = ([], [], [])
            group[0].append(record)
            group[1].append(key)
            group[2].append(fields)
        if len(groups) == 1:
            return self._group(records, keys, scanned, seen)
        futures = [self.executor.submit(self._group, *group, seen) for group in groups.values()]
        merged = BatchOutput()
        for future in futures:
            part = future.result()
            merged.records.extend(part.records)
            merged.ids.extend(part.ids)
            merged.next_offsets.update(part.next_offsets)
            merged.abandoned = merged.abandoned or part.abandoned
        return merged

    def _group(
        self,
        records: list[Record],
        keys: list[str],
        scanned: list[Fields | None],
        seen: set[str],
    ) -> BatchOutput:
        """Handle one partition's records (on a pool thread: no database for handlers)."""
        output = BatchOutput()
        self._sequence(records, keys, scanned, seen=seen, output=output, inbox=None)
        return output

    def _sequence(
        self,
        records: list[Record],
        keys: list[str],
        scanned: list[Fields | None],
        *,
        seen: set[str],
        output: BatchOutput,
        inbox: Inbox | None,
    ) -> None:
        """Handle records in order into ``output``; stop early when the worker stops mid-retry.

        ``keys`` are the records' inbox keys and ``scanned`` their envelopes when
        :func:`scan_headers` could read them; ``inbox`` is the store whose connection
        handlers get as ``ctx.db`` (None: no database). This is the hot path: the common
        case (a new record of a handled type whose handler takes no context and succeeds
        at once) stays in this loop and :meth:`Emitter.emit_one`.
        """
        routes = self.routes
        decode = self.decode
        emitter = self.emitter
        emit_one = emitter.emit_one
        out_ids = output.ids
        out_records = output.records
        db = inbox if inbox is not None and inbox.connection is not None else None
        done = 0
        for record, key, scan in zip(records, keys, scanned, strict=True):
            done += 1
            if key in seen:
                if logger.isEnabledFor(logging.DEBUG):
                    self._log.debug("duplicate %s dropped", key)
                continue
            fields = scan if scan is not None else self._read_fields(record, key, seen, output)
            if fields is None:
                continue
            route = routes.get(fields[0])
            if route is None:
                self._not_ours((record, fields), seen, output)
                continue
            try:
                event = decode(fields[0], record.value or b"")
            except Exception as exc:  # DecodeError, UnknownEventError, a serde bug
                self._undecodable(record, key, exc, seen, output)
                continue
            if route.takes_context:
                emitted = self._invoke(route, (record, fields), event, db)
            else:  # the first attempt of a handler without context, inlined
                try:
                    result = route.func(event)
                    if isinstance(result, Event):
                        out_records.append(emit_one(route, fields, result))
                    elif result is not None:
                        out_records.extend(
                            emitter.emit(route, fields, as_events(route.step_id, [], result))
                        )
                    emitted = _NOTHING
                except Exception as exc:
                    emitted = self._after_failure(route, (record, fields), event, exc)
            if emitted is None:
                output.abandoned = True
                done -= 1
                break
            seen.add(key)
            out_ids.append(key)
            out_records.extend(emitted)
        output.next_offsets.update({(r.topic, r.partition): r.offset + 1 for r in records[:done]})

    # --- records that cannot be handled -------------------------------------------------

    def _undecodable(
        self, record: Record, key: str, error: Exception, seen: set[str], output: BatchOutput
    ) -> None:
        """Dead-letter a record whose payload did not decode (or whose type is unknown)."""
        reason = (
            DeadLetterReason.UNKNOWN_EVENT_TYPE
            if isinstance(error, UnknownEventError)
            else DeadLetterReason.UNDECODABLE
        )
        self._dead_letter_once(record, key, reason, error, seen=seen, output=output)

    def _read_fields(
        self, record: Record, key: str, seen: set[str], output: BatchOutput
    ) -> Fields | None:
        """Return the envelope of a record in an unusual layout, or dead-letter it (None)."""
        headers = dict(record.headers)
        try:
            fields = fields_from(headers)
            if fields[1] != key:
                raise EnvelopeError(f"header {_ID!r} is repeated with other values")
        except EnvelopeError as exc:
            self._dead_letter_once(
                record, key, DeadLetterReason.BAD_ENVELOPE, exc, seen=seen, output=output
            )
            return None
        return fields

    def _not_ours(self, item: _Item, seen: set[str], output: BatchOutput) -> None:
        """Skip an event this service does not handle; dead-letter it if its type is unknown."""
        record, fields = item
        try:
            self.decode(fields[0], record.value or b"")
        except UnknownEventError as exc:
            self._dead_letter_once(
                record,
                fields[1],
                DeadLetterReason.UNKNOWN_EVENT_TYPE,
                exc,
                seen=seen,
                output=output,
            )
            return
        except Exception as exc:
            self._event_log(item).debug("skipping unhandled, undecodable record: %s", exc)
            return
        self._event_log(item).debug("no handler here; skipped")

    def _dead_letter_once(
        self,
        record: Record,
        inbox_id: str,
        reason: DeadLetterReason,
        error: BaseException | None,
        *,
        seen: set[str],
        output: BatchOutput,
    ) -> None:
        """Dead-letter ``record`` unless ``inbox_id`` was dead-lettered already."""
        if inbox_id in seen:
            return
        self._log.error(
            "dead-lettering %s[%d]@%d to %s: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            self.deadletter_topic,
            reason.value,
            error,
        )
        seen.add(inbox_id)
        output.ids.append(inbox_id)
        output.records.append(
            dead_letter_record(
                record,
                topic=self.deadletter_topic,
                reason=reason,
                error=error,
                service=self.service,
                attempts=0,
                failed_at_ms=now_ms(),
            )
        )

    # --- handlers that fail -------------------------------------------------------------

    def _invoke(
        self, route: Route, item: _Item, event: Event, inbox: Inbox | None
    ) -> list[OutboxRecord] | None:
        """Call a handler that takes a context, with retries; return its outbox records.

        The result is the emitted events' records, or a dead letter once the retry budget
        is spent. Returns None when the worker is stopped during a backoff: the record
        stays unhandled and is redelivered later. ``inbox`` provides ``ctx.db`` (None:
        none). Handlers without a context run in :meth:`_sequence` and
        :meth:`_after_failure`.
        """
        func = route.func
        emit = self.emitter.emit
        attempt = 1
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
                    return emit(route, item[1], [failure_event(route, failure)])
                except Exception as exc:
                    error = exc
            except Exception as exc:
                settle(ctx, keep=False)
                error = exc
            else:
                settle(ctx, keep=True)
                return emitted
            if attempt >= route.retry.max_attempts:
                return [self._give_up(route, item, error, attempt)]
            if not self._wait_to_retry(route, item, error, attempt):
                return None
            attempt += 1

    def _after_failure(
        self, route: Route, item: _Item, event: Event, error: Exception
    ) -> list[OutboxRecord] | None:
        """Finish a context-less handler whose first attempt raised ``error`` (see _invoke).

        A :class:`~choreo.errors.BusinessFailure` emits the declared failure event; any
        other error is retried with backoff until the budget runs out (then dead letter).
        """
        func = route.func
        emitter = self.emitter
        attempt = 1
        while True:
            if isinstance(error, BusinessFailure):
                try:
                    return emitter.emit(route, item[1], [failure_event(route, error)])
                except Exception as exc:
                    error = exc
            if attempt >= route.retry.max_attempts:
                return [self._give_up(route, item, error, attempt)]
            if not self._wait_to_retry(route, item, error, attempt):
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

    def _wait_to_retry(self, route: Route, item: _Item, error: Exception, attempt: int) -> bool:
        """Log a failed attempt and wait out its backoff; return False if stopped meanwhile."""
        delay = backoff_delay(route.retry, attempt)
        log = self._event_log(item)
        log.warning(
            "%s attempt %d/%d failed, retrying in %.3f s: %s: %s",
            route.spec.step_id,
            attempt,
            route.retry.max_attempts,
            delay,
            type(error).__name__,
            error,
        )
        if self.wait(delay):
            log.info("stopping: %s left for redelivery", item[1][1])
            return False
        return True

    def _give_up(self, route: Route, item: _Item, error: Exception, attempts: int) -> OutboxRecord:
        """Return the dead letter of a record whose handler exhausted its retry budget."""
        spec = route.spec
        compensation = spec.kind is StepKind.COMPENSATION
        self._event_log(item).error(
            "%s failed %d time(s), dead-lettered%s: %s: %s",
            spec.step_id,
            attempts,
            " (compensation: needs a human)" if compensation else "",
            type(error).__name__,
            error,
            exc_info=None if isinstance(error, TransientError) else error,
        )
        return dead_letter_record(
            item[0],
            topic=self.deadletter_topic,
            reason=(
                DeadLetterReason.COMPENSATION_EXHAUSTED
                if compensation
                else DeadLetterReason.RETRIES_EXHAUSTED
            ),
            error=error,
            service=self.service,
            attempts=attempts,
            failed_at_ms=now_ms(),
        )

    def _event_log(self, item: _Item) -> EventLogger:
        """Return a logger that prefixes lines with service, event type and correlation id."""
        fields = item[1]
        return EventLogger(
            logger,
            {
                "service": self.service,
                "event_type": fields[0],
                "correlation_id": fields[5][1].decode("utf-8", "replace"),
            },
        )


def inbox_key(record: Record) -> str:
    """Return the key a record is deduplicated under: its event id, else its dead-letter id.

    Looks where :meth:`Envelope.to_headers` puts the id first, then anywhere (the last
    value wins, as in a dict of the headers; a repeated id with another value is caught
    when the envelope is checked).
    """
    headers = record.headers
    value: bytes | None = None
    if len(headers) > 1 and headers[1][0] == _ID:
        value = headers[1][1]
    else:
        for name, data in reversed(headers):
            if name == _ID:
                value = data
                break
    if value:
        try:
            return value.decode()
        except UnicodeDecodeError:
            pass
    return dead_letter_id(record)
