"""The worker: poll a batch, decode, deduplicate, dispatch, store the output, publish, commit.

One :class:`Worker` runs one service. Each polled batch is handled in ONE local
transaction of its :class:`~choreo.runtime.inbox.Inbox`:

1. read every record's envelope and ask the inbox which event ids were handled already;
2. for each new record, in partition order: decode the payload, call the handler (its
   ``ctx.db`` is the inbox's connection, inside a savepoint per attempt), check and encode
   what it emits with deterministic ids (:func:`~choreo.runtime.routing.derived_event_id`),
   or build a dead letter;
3. record the handled ids and store the emitted records and dead letters in the outbox;
   COMMIT once.

Then every unsent outbox record is published, the producer is flushed once, and the
batch's offsets are committed; the published records are deleted from the outbox in the
next batch's transaction. A crash anywhere loses nothing: unsent records are replayed at
start-up, records whose offsets were not committed are redelivered and dropped by the
inbox, and a record published twice keeps its event id so the next inbox drops the copy.

With ``WorkerConfig(exactly_once=True)`` the flush and offset commit are replaced by one
Kafka transaction {publish the outbox, send the offsets, commit}. When the transaction
fails the producer is recreated (or the transaction aborted when the client says it is
abortable), the consumer is rewound to the batch's first offsets, and the outbox is
published again with the next batch.

Errors: an exception from a handler (:class:`~choreo.errors.TransientError` or any other)
is retried on the same record with exponential backoff, which blocks its partition and
keeps per-key order; :class:`~choreo.errors.BusinessFailure` emits the step's declared
failure event; an undecodable record, a broken envelope, an unknown event type or an
exhausted budget goes to the dead-letter topic (see :mod:`choreo.runtime.deadletter`)
and the worker moves past it.

Concurrency: with ``WorkerConfig(concurrency=N)`` and N > 1, the partitions of a batch
are handled in a pool of N threads (records of one partition stay in order on one
thread). Handlers then get ``ctx.db = None`` and no savepoints: the inbox and outbox
writes are made by the loop thread after the pool finishes, in the same single
transaction. A handler that writes its own tables through ``ctx.db`` needs
``concurrency=1``.

Rebalances: the worker commits each batch before it polls again, and a revocation is
reported inside ``poll``, so no batch is ever in flight when partitions are revoked; the
revocation callback only publishes what is pending and commits offsets held back by a
failed flush, for the revoked partitions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

from choreo.choreography.service import Service, StepKind
from choreo.errors import (
    BusinessFailure,
    ChoreoError,
    ConfigurationError,
    EnvelopeError,
    HandlerError,
    TransactionError,
    TransientError,
    TransportError,
    UnknownEventError,
)
from choreo.model.context import EventLogger
from choreo.model.envelope import Header, now_ms
from choreo.model.events import Event
from choreo.runtime.config import WorkerConfig
from choreo.runtime.deadletter import DeadLetterReason, dead_letter_id, dead_letter_record
from choreo.runtime.handler_context import new_context, settle
from choreo.runtime.inbox import Inbox, MemoryInbox
from choreo.runtime.outbox import OutboxRecord
from choreo.runtime.retry import backoff_delay
from choreo.runtime.routing import (
    _NAMESPACE_SHA1,
    _VARIANT,
    Fields,
    Route,
    build_routes,
    fields_from,
    scan_headers,
)
from choreo.runtime.tracing import all_valid, is_valid
from choreo.transports.base import Consumer, Producer, Record, TopicPartition, Transport

__all__ = ["Serde", "Worker"]

logger = logging.getLogger(__name__)

_ID = Header.EVENT_ID
_AT = Header.PRODUCED_AT
_CAUSE = Header.CAUSATION_ID
_TRACE = Header.TRACEPARENT

_Item = tuple[Record, Fields]
"""A polled record and its checked envelope (see :func:`~choreo.runtime.routing.scan_headers`)."""

_new_record: Callable[[tuple[Any, ...]], OutboxRecord] = partial(tuple.__new__, OutboxRecord)
_NOTHING: Final[list[OutboxRecord]] = []  # "handled, nothing more to add" (never mutated)


class Serde(Protocol):
    """Turns events into bytes and back (e.g. :class:`choreo.avro.serde.EventSerde`)."""

    def encode(self, event: Event) -> bytes:
        """Return the encoded payload of ``event``."""
        ...

    def decode(self, event_type: str, data: bytes) -> Event:
        """Return the event of ``event_type`` encoded in ``data``.

        Raises :class:`~choreo.errors.UnknownEventError` for an unknown type and
        :class:`~choreo.errors.DecodeError` for bytes that do not decode.
        """
        ...


@dataclass(slots=True)
class _Output:
    """What handling part of a batch produced: outbox records, handled ids, offsets."""

    records: list[OutboxRecord] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    abandoned: bool = False


class Worker:
    """Runs one service: consumes its event types and handles them (see the module docs).

    ``serde`` encodes and decodes the payloads; ``inbox`` defaults to a
    :class:`~choreo.runtime.inbox.MemoryInbox` (pass a
    :class:`~choreo.runtime.inbox.SqliteInbox` for durability). Use :meth:`run` in a
    process, or :meth:`run_once` to drive it step by step (tests, :mod:`choreo.testing`).
    """

    def __init__(
        self,
        service: Service,
        transport: Transport,
        serde: Serde,
        *,
        config: WorkerConfig | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.service = service
        self.transport = transport
        self.serde = serde
        self.config = config = config if config is not None else WorkerConfig()
        self.inbox: Inbox = inbox if inbox is not None else MemoryInbox()
        self._owns_inbox = inbox is None
        self.group_id = config.group_for(service.name)
        self.origin = f"worker.{self.group_id}"
        if not service.consumed_types:
            raise ConfigurationError(f"service {service.name} has no handlers to run")
        self._routes = build_routes(
            service,
            naming=config.topic_naming,
            default=config.retry,
            compensation=config.compensation_retry,
        )
        self.topics: tuple[str, ...] = tuple(
            sorted({config.topic_naming(t) for t in service.consumed_types})
        )
        self.deadletter_topic = config.deadletter_naming(service.name)
        self._tracing = config.tracing
        self._produced_at: tuple[str, bytes] = (_AT, b"0")  # set once per batch
        self._traces_valid = False  # every traceparent of the batch in hand is valid
        self._log = EventLogger(
            logger, {"service": service.name, "event_type": "-", "correlation_id": "-"}
        )
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._pending: list[OutboxRecord] = []  # stored in the outbox, not yet acknowledged
        self._sent: list[str] = []  # acknowledged, deleted in the next transaction
        self._uncommitted: dict[TopicPartition, int] = {}  # held back by a failed flush
        self._stop = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._started = False
        self._closed = False
        self._closing = False
        self._last_prune = time.monotonic()

    def __repr__(self) -> str:
        return f"Worker({self.service.name!r}, group={self.group_id!r}, topics={self.topics})"

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Create topics, producer and consumer, subscribe, and publish unsent leftovers.

        Called by :meth:`run` and on the first :meth:`run_once`; calling it again does
        nothing.
        """
        if self._started:
            return
        if self._closed:
            raise ConfigurationError("this worker is closed; build a new one")
        config = self.config
        if config.create_topics:
            emitted = {
                config.topic_naming(t) for spec in self.service.handlers for t in spec.emitted_types
            }
            self.transport.create_topics(
                sorted({*self.topics, *emitted, self.deadletter_topic}),
                partitions=config.topic_partitions,
            )
        self._producer = self._new_producer()
        self._consumer = self.transport.consumer(
            self.group_id, from_beginning=config.from_beginning, instance_id=config.instance_id
        )
        self._consumer.subscribe(
            list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        if config.concurrency > 1:
            self._executor = ThreadPoolExecutor(
                config.concurrency, thread_name_prefix=f"choreo-{self.service.name}"
            )
            if self.inbox.connection is not None:
                self._log.warning(
                    "concurrency=%d: handlers run on pool threads and get ctx.db = None",
                    config.concurrency,
                )
        self._pending = self.inbox.pending(self.origin)
        self._started = True
        self._log.info(
            "worker started: group %s, topics %s%s",
            self.group_id,
            ", ".join(self.topics),
            ", exactly-once" if config.exactly_once else "",
        )
        if self._pending:
            self._log.warning("replaying %d unsent outbox record(s)", len(self._pending))
            self._deliver({}, [])

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or the event given to :meth:`run` is set)."""
        return self._stop.is_set()

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Handle batches until ``stop_event`` (or :meth:`stop`) is set, then close.

        ``stop_event`` becomes the worker's stop signal. Infrastructure errors (broker,
        database) are logged and retried after ``config.error_backoff`` seconds; the
        batch in hand is rewound first, so nothing is skipped.
        """
        if stop_event is not None:
            self._stop = stop_event
        try:
            self.start()
            while not self._stop.is_set():
                try:
                    self.run_once(self.config.poll_timeout)
                except ConfigurationError:
                    raise
                except Exception:
                    self._log.exception(
                        "worker error; retrying in %.1f s", self.config.error_backoff
                    )
                    self._stop.wait(self.config.error_backoff)
        finally:
            self.close()

    def close(self) -> None:
        """Publish what is pending (best effort), then close consumer and producer.

        The inbox is closed only when the worker created it.
        """
        if self._closed:
            return
        self._closing = True
        try:
            if self._started:
                self._finish_pending()
        finally:
            self._closed = True
            for resource in (self._consumer, self._producer):
                if resource is not None:
                    try:
                        resource.close()
                    except ChoreoError as exc:
                        self._log.warning("closing %s failed: %s", type(resource).__name__, exc)
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            if self._owns_inbox:
                self.inbox.close()
            self._log.info("worker closed")

    def _finish_pending(self) -> None:
        """Deliver unsent records and forget acknowledged ones before closing."""
        try:
            if self._pending or self._uncommitted:
                self._deliver({}, [])
            if self._sent:
                self._forget_sent()
        except Exception as exc:
            self._log.warning("could not finish pending work at close (kept for restart): %s", exc)

    # --- the loop --------------------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> int:
        """Poll one batch and handle it completely; return how many records it held.

        Duplicates and dead-lettered records count as handled. ``timeout`` defaults to
        ``config.poll_timeout``. Raises on infrastructure errors after rewinding.
        """
        self.start()
        if self._pending or self._uncommitted:
            self._deliver({}, [])
        assert self._consumer is not None
        records = self._consumer.poll(
            self.config.max_poll_records,
            self.config.poll_timeout if timeout is None else timeout,
        )
        if not records:
            if self._sent:
                self._forget_sent()
            return 0
        return self._handle_batch(records)

    def _handle_batch(self, records: list[Record]) -> int:
        """Handle one polled batch in one local transaction, then deliver its output."""
        inbox = self.inbox
        now = now_ms()
        self._produced_at = (_AT, str(now).encode())
        inbox.begin()
        try:
            if self._sent:
                inbox.mark_sent(self._sent)
            self._maybe_prune()
            output = self._process(records)
            if output.ids:
                inbox.add(self.group_id, output.ids, now)
            if output.records:
                inbox.enqueue(self.origin, output.records)
        except BaseException:
            inbox.rollback()
            self._rewind(_first_offsets(records))
            raise
        inbox.commit()
        self._sent = []
        self._pending.extend(output.records)
        if output.abandoned:
            self._rewind(
                {
                    tp: output.next_offsets.get(tp, offset)
                    for tp, offset in _first_offsets(records).items()
                }
            )
        offsets = {TopicPartition(t, p): o for (t, p), o in output.next_offsets.items()}
        self._deliver(offsets, records)
        return len(records)

    def _forget_sent(self) -> None:
        """Delete acknowledged records from the outbox in a small transaction of their own."""
        self.inbox.begin()
        try:
            self.inbox.mark_sent(self._sent)
        except BaseException:
            self.inbox.rollback()
            raise
        self.inbox.commit()
        self._sent = []

    def _maybe_prune(self) -> None:
        """Prune old inbox rows when the retention interval has passed (inside the batch)."""
        retention = self.config.inbox_retention
        if retention is None:
            return
        now = time.monotonic()
        if now - self._last_prune < self.config.prune_interval:
            return
        self._last_prune = now
        removed = self.inbox.prune(self.group_id, now_ms() - int(retention * 1000))
        if removed:
            self._log.info("pruned %d inbox row(s) older than %.0f s", removed, retention)

    def _process(self, records: list[Record]) -> _Output:
        """Handle the records in order (or per partition in the pool) and collect the output.

        A first pass reads each record's envelope (:func:`scan_headers`) and inbox key (its
        event id) for one batched :meth:`Inbox.seen` query; the second handles one record
        at a time.
        """
        scanned = [scan_headers(record.headers) for record in records]
        # traceparents checked for the whole batch at once; b"" (invalid) when a record
        # takes the slow path, so that batch's traceparents are checked one by one
        self._traces_valid = self._tracing and all_valid(
            [fields[3] if fields is not None else b"" for fields in scanned]
        )
        keys = [
            fields[1] if fields is not None else _inbox_key(record)
            for record, fields in zip(records, scanned, strict=True)
        ]
        seen = self.inbox.seen(self.group_id, keys)
        if self._executor is None:
            output = _Output()
            self._process_sequence(
                records, keys, scanned, seen=seen, output=output, inbox=self.inbox
            )
            return output
        return self._process_in_pool(records, keys, scanned, seen)

    def _process_in_pool(
        self,
        records: list[Record],
        keys: list[str],
        scanned: list[Fields | None],
        seen: set[str],
    ) -> _Output:
        """Handle each partition's records on a pool thread; merge in partition order."""
        assert self._executor is not None
        groups: dict[tuple[str, int], tuple[list[Record], list[str], list[Fields | None]]] = {}
        for record, key, fields in zip(records, keys, scanned, strict=True):
            group = groups.get((record.topic, record.partition))
            if group is None:
                group = groups[(record.topic, record.partition)] = ([], [], [])
            group[0].append(record)
            group[1].append(key)
            group[2].append(fields)
        if len(groups) == 1:
            output = _Output()
            self._process_sequence(records, keys, scanned, seen=seen, output=output, inbox=None)
            return output
        futures = [
            self._executor.submit(self._process_group, *group, seen) for group in groups.values()
        ]
        merged = _Output()
        for future in futures:
            part = future.result()
            merged.records.extend(part.records)
            merged.ids.extend(part.ids)
            merged.next_offsets.update(part.next_offsets)
            merged.abandoned = merged.abandoned or part.abandoned
        return merged

    def _process_group(
        self,
        records: list[Record],
        keys: list[str],
        scanned: list[Fields | None],
        seen: set[str],
    ) -> _Output:
        """Handle one partition's records on a pool thread (no database for handlers)."""
        output = _Output()
        self._process_sequence(records, keys, scanned, seen=seen, output=output, inbox=None)
        return output

    def _process_sequence(
        self,
        records: list[Record],
        keys: list[str],
        scanned: list[Fields | None],
        *,
        seen: set[str],
        output: _Output,
        inbox: Inbox | None,
    ) -> None:
        """Handle records in order into ``output``; stop early when the worker stops mid-retry.

        ``keys`` are the records' inbox keys and ``scanned`` their envelopes when
        :func:`scan_headers` could read them; ``inbox`` is the store whose connection
        handlers get as ``ctx.db`` (None: no database). This is the hot path: the common
        case (a new record of a handled type whose handler takes no context and succeeds
        at once) stays in this loop and :meth:`_encode_one`.
        """
        routes = self._routes
        decode = self.serde.decode
        encode_one = self._encode_one
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
                        out_records.append(encode_one(route, fields, result))
                    elif result is not None:
                        out_records.extend(
                            self._encode(route, fields, _as_events(route.step_id, [], result))
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

    def _undecodable(
        self, record: Record, key: str, error: Exception, seen: set[str], output: _Output
    ) -> None:
        """Dead-letter a record whose payload did not decode (or whose type is unknown)."""
        reason = (
            DeadLetterReason.UNKNOWN_EVENT_TYPE
            if isinstance(error, UnknownEventError)
            else DeadLetterReason.UNDECODABLE
        )
        self._dead_letter_once(record, key, reason, error, seen=seen, output=output)

    def _read_fields(
        self, record: Record, key: str, seen: set[str], output: _Output
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

    def _not_ours(self, item: _Item, seen: set[str], output: _Output) -> None:
        """Skip an event this service does not handle; dead-letter it if its type is unknown."""
        record, fields = item
        try:
            self.serde.decode(fields[0], record.value or b"")
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

    def _invoke(
        self, route: Route, item: _Item, event: Event, inbox: Inbox | None
    ) -> list[OutboxRecord] | None:
        """Call a handler that takes a context, with retries; return its outbox records.

        The result is the emitted events' records, or a dead letter once the retry budget
        is spent. Returns None when the worker is stopped during a backoff: the record
        stays unhandled and is redelivered later. ``inbox`` provides ``ctx.db`` (None:
        none). Handlers without a context run in :meth:`_process_sequence` and
        :meth:`_after_failure`.
        """
        func = route.func
        attempt = 1
        headers = dict(item[0].headers)
        service = self.service.name
        while True:
            ctx = new_context(headers, service, attempt, inbox, route.logger)
            try:
                result = func(event, ctx)
                queued = ctx._emitted
                if result is None:
                    events = queued
                elif isinstance(result, Event):
                    events = [*queued, result]
                else:
                    events = _as_events(route.step_id, queued, result)
                emitted = self._encode(route, item[1], events) if events else []
            except BusinessFailure as failure:
                settle(ctx, keep=False)
                try:
                    return self._encode(route, item[1], [self._failure_event(route, failure)])
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
        attempt = 1
        while True:
            if isinstance(error, BusinessFailure):
                try:
                    return self._encode(route, item[1], [self._failure_event(route, error)])
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
                    return [self._encode_one(route, item[1], result)]
                if result is None:
                    return []
                return self._encode(route, item[1], _as_events(route.step_id, [], result))
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
        if self._stop.wait(delay):
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
            service=self.service.name,
            attempts=attempts,
            failed_at_ms=now_ms(),
        )

    def _encode_one(
        self, route: Route, fields: Fields, event: Event, index: int = 0
    ) -> OutboxRecord:
        """Return the outbox record of the ``index``-th event a handler emitted.

        The event gets the id :func:`~choreo.runtime.routing.derived_event_id` (parent id,
        step, ``index``), inlined here because it is on the per-event path; the incoming
        record's correlation id, saga and trace (with the id's last 16 hex digits as span
        id, as :func:`~choreo.runtime.tracing.child_traceparent`); and the batch's
        produced-at time.
        """
        _, _, saga, trace, parent_id, cid, saga_pair = fields
        cls = event.__class__
        plan = route.plans.get((cls, saga)) or route.plan(cls, saga)
        suffixes = route.id_suffixes
        suffix = suffixes[index] if index < len(suffixes) else route.id_suffix(index)
        digest = _NAMESPACE_SHA1.copy()  # uuid5 of "<parent id>/<step>/<index>"
        digest.update(parent_id + suffix)
        h = digest.hexdigest()
        variant = _VARIANT[h[16]]
        event_id = f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"
        headers: tuple[tuple[str, bytes], ...] = (
            plan.type_header,
            (_ID, event_id.encode()),
            cid,
            saga_pair,
            plan.role_header,
            plan.service_header,
            self._produced_at,
            (_CAUSE, parent_id),
            plan.step_header,
        )
        if trace is not None and self._tracing:
            if self._traces_valid or is_valid(trace):
                text = trace.decode()
                child = f"{text[:36]}{variant}{h[17:32]}{text[52:]}"
            else:  # an invalid parent starts a new trace (W3C Trace Context)
                child = f"00-{os.urandom(16).hex()}-{variant}{h[17:32]}-01"
            headers += ((_TRACE, child.encode()),)
        return _new_record((event_id, plan.topic, cid[1], self.serde.encode(event), headers))

    def _encode(self, route: Route, fields: Fields, events: Sequence[Any]) -> list[OutboxRecord]:
        """Return the outbox records of a handler's emitted events (see :meth:`_encode_one`).

        Raises :class:`~choreo.errors.HandlerError` for an event the handler did not declare
        or that is not an :class:`~choreo.model.events.Event` (checked when its plan is built).
        """
        encode_one = self._encode_one
        return [encode_one(route, fields, event, index) for index, event in enumerate(events)]

    @staticmethod
    def _failure_event(route: Route, failure: BusinessFailure) -> Event:
        """Return the failure event a BusinessFailure asks for, checked against the spec."""
        spec = route.spec
        if failure.event is not None:
            event = failure.event
            if not isinstance(event, Event) or type(event) not in spec.fails_with:
                raise HandlerError(
                    f"handler {spec.step_id} raised BusinessFailure({event!r}), which is not one "
                    "of its declared fails_with events"
                )
            return event
        if len(spec.fails_with) != 1:
            raise HandlerError(
                f"handler {spec.step_id} raised BusinessFailure without an event but declares "
                f"{len(spec.fails_with)} fails_with events; pass the event"
            )
        return spec.fails_with[0](**failure.fields)

    def _dead_letter_once(
        self,
        record: Record,
        inbox_id: str,
        reason: DeadLetterReason,
        error: BaseException | None,
        *,
        seen: set[str],
        output: _Output,
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
                service=self.service.name,
                attempts=0,
                failed_at_ms=now_ms(),
            )
        )

    def _event_log(self, item: _Item) -> EventLogger:
        """Return a logger that prefixes lines with service, event type and correlation id."""
        fields = item[1]
        return EventLogger(
            logger,
            {
                "service": self.service.name,
                "event_type": fields[0],
                "correlation_id": fields[5][1].decode("utf-8", "replace"),
            },
        )

    # --- delivery --------------------------------------------------------------------

    def _new_producer(self) -> Producer:
        """Return a producer: transactional in exactly-once mode."""
        if self.config.exactly_once:
            return self.transport.producer(
                transactional_id=self.config.transactional_id_for(self.service.name)
            )
        return self.transport.producer()

    def _deliver(self, offsets: dict[TopicPartition, int], records: list[Record]) -> None:
        """Publish every pending record, then commit ``offsets`` (flush or transaction).

        ``records`` is the batch the offsets come from (rewound if a transaction fails).
        """
        if self.config.exactly_once:
            self._deliver_transaction(offsets, records)
        else:
            self._deliver_flush(offsets)

    def _deliver_flush(self, offsets: dict[TopicPartition, int]) -> None:
        """At-least-once: publish, flush once, forget the sent records, commit offsets."""
        assert self._producer is not None and self._consumer is not None
        producer = self._producer
        pending = self._pending
        if pending:
            publish = producer.publish
            try:
                for _, topic, key, value, headers in pending:
                    publish(topic, value, key=key, headers=headers)
                producer.flush(self.config.flush_timeout)
            except TransportError:
                self._uncommitted.update(offsets)
                raise
            self._sent.extend([r[0] for r in pending])
            self._pending = []
        if self._uncommitted:
            offsets = {**self._uncommitted, **offsets}
            self._uncommitted = {}
        if offsets:
            self._commit(offsets)

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit consumer offsets; a failure is logged (the records come back, deduplicated)."""
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets)
        except TransportError as exc:
            self._log.warning("offset commit failed (records will be redelivered): %s", exc)

    def _deliver_transaction(
        self, offsets: dict[TopicPartition, int], records: list[Record]
    ) -> None:
        """Exactly-once: one Kafka transaction {publish pending, send offsets, commit}."""
        assert self._producer is not None and self._consumer is not None
        if not self._pending and not offsets:
            return
        producer = self._producer
        timeout = self.config.transaction_timeout
        pending = self._pending
        try:
            producer.begin_transaction()
            publish = producer.publish
            for _, topic, key, value, headers in pending:
                publish(topic, value, key=key, headers=headers)
            if offsets:
                producer.send_offsets_to_transaction(offsets, self._consumer, timeout)
            producer.commit_transaction(timeout)
        except TransportError as exc:
            self._recover_transaction(exc)
            self._rewind(_first_offsets(records))
            raise
        self._sent.extend([r[0] for r in pending])
        self._pending = []

    def _recover_transaction(self, exc: TransportError) -> None:
        """Abort an abortable transaction; otherwise (timeout, fatal) recreate the producer."""
        abortable = isinstance(exc, TransactionError) and exc.abortable and not exc.fatal
        if abortable and not exc.retriable:
            self._log.warning("transaction failed, aborting it: %s", exc)
            try:
                assert self._producer is not None
                self._producer.abort_transaction(self.config.transaction_timeout)
                return
            except TransportError as abort_error:
                self._log.warning("abort failed, recreating the producer: %s", abort_error)
        else:
            self._log.warning("transaction failed, recreating the producer: %s", exc)
        if self._producer is not None:
            try:
                self._producer.close()
            except TransportError as close_error:
                self._log.debug("closing the failed producer: %s", close_error)
        self._producer = self._new_producer()

    def _rewind(self, first: dict[tuple[str, int], int]) -> None:
        """Seek each partition back to ``first`` so its records are polled again."""
        if not first or self._consumer is None:
            return
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition), offset)
            except TransportError as exc:  # no longer assigned: its new owner reads it
                self._log.debug("cannot rewind %s[%d]: %s", topic, partition, exc)

    # --- rebalance ---------------------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Log the partitions this worker now owns."""
        self._log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit what the revoked partitions have pending; no batch is ever in flight here."""
        self._log.info("revoked %s", _describe(partitions))
        if self._closing or self.config.exactly_once:
            return
        revoked = set(partitions)
        held = {tp: o for tp, o in self._uncommitted.items() if tp in revoked}
        if not held and not self._pending:
            return
        try:
            if self._pending:
                self._deliver_flush({})
                return
        except TransportError as exc:
            self._log.warning("could not deliver pending records on revoke: %s", exc)
            if not self.inbox.durable:
                return
        held = {tp: o for tp, o in self._uncommitted.items() if tp in revoked}
        for tp in held:
            del self._uncommitted[tp]
        if held:
            self._commit(held)


def _inbox_key(record: Record) -> str:
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


def _as_events(step_id: str, queued: list[Event], result: object) -> list[Event]:
    """Return ``queued`` plus a handler's sequence result, or raise TypeError if it is not one."""
    if isinstance(result, (list, tuple)):
        return [*queued, *result]
    raise TypeError(
        f"handler {step_id} returned {type(result).__qualname__}; "
        "return an Event, a list of Events or None"
    )


def _first_offsets(records: list[Record]) -> dict[tuple[str, int], int]:
    """Return the first offset of each partition in ``records``."""
    first: dict[tuple[str, int], int] = {}
    for record in records:
        first.setdefault((record.topic, record.partition), record.offset)
    return first


def _describe(partitions: list[TopicPartition]) -> str:
    """Return partitions as ``topic[p]`` items for a log line."""
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
