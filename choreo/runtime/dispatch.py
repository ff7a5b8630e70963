"""Dispatch of a polled batch to the handlers: decode, dedupe, invoke, retry, dead-letter.

A :class:`Dispatcher` handles the records of one batch in partition order and returns a
:class:`BatchOutput`: the outbox records to publish (emitted events and dead letters),
the inbox keys of the records handled, and the next offset of each partition.

- **Dedupe**: a first pass reads every record's envelope
  (:func:`~choreo.runtime.routing.scan_headers`) and its inbox key (the event id) for one
  batched :meth:`~choreo.store.base.Store.seen` query; records already handled are
  dropped.
- **Invoke**: the handler of the record's event type is called with the decoded event by
  an :class:`~choreo.runtime.invoke.Invoker`, which owns retries with backoff, business
  failures and giving up to a dead letter (see :mod:`choreo.runtime.invoke`).
- **Dead letters** of records no handler can take: an undecodable payload, a broken
  envelope or an unknown event type goes to the dead-letter topic
  (:mod:`choreo.runtime.unhandled`, :mod:`choreo.runtime.deadletter`), and the batch
  moves past it.
- **Hooks**: with middleware that needs ``before_dispatch`` / ``after_dispatch``
  (:mod:`choreo.runtime.middleware`), each routed record is handled between them;
  without, the common case (a handler without context that succeeds at once) stays
  inlined in the loop.

With a thread pool, the partitions of a batch are handled on its threads (one partition
per thread, in order); handlers then get ``ctx.db = None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Final, cast

from choreo.model.events import Event
from choreo.runtime.batch_output import BatchOutput, handled_up_to
from choreo.runtime.emit import Emitter, as_events
from choreo.runtime.invoke import Invoker, Item, event_info
from choreo.runtime.middleware import EventInfo, Hooks, Outcome
from choreo.runtime.pauses import sole_partition
from choreo.runtime.routing import Fields, Route, scan_headers
from choreo.runtime.tracing import all_valid
from choreo.runtime.unhandled import UnhandledRecords, inbox_key
from choreo.store import Inbox
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record

__all__ = ["BatchOutput", "Dispatcher", "inbox_key"]

logger = logging.getLogger("choreo.runtime.worker")

_EVENT_ID: Final = itemgetter(1)  # of Fields
_TRACE: Final = itemgetter(3)  # of Fields

ClaimAhead = Callable[[str, list[str]], Callable[[], set[str]]]
"""A store's ``claim_ahead``: send the batch's inbox claim, return the call reading it."""

_Item = tuple[Record, str, "Fields | None"]  # a record, its inbox key, its scanned envelope

_SKIPPED: Final[list[OutboxRecord]] = []  # "accounted for already" (never mutated)


class Dispatcher(UnhandledRecords):
    """Hands each record of a batch to its handler and collects the output (see module docs).

    ``decode`` is the serde's decoder; ``decoder_for`` (optional, e.g.
    :meth:`~choreo.avro.serde.EventSerde.decoder_for`) returns the function decoding one
    event type exactly as ``decode`` does, asked once per type. ``invoker`` runs a handler
    to its outcome (retries, failures, dead letters); ``hooks`` are the worker's middleware
    (the per-event ones are called with ``worker``); ``executor`` (optional) handles
    partitions in parallel.
    """

    invoker: Invoker

    def __init__(
        self,
        *,
        worker: object,
        group_id: str,
        routes: Mapping[str, Route],
        decode: Callable[[str, bytes], Event],
        emitter: Emitter,
        decoder_for: Callable[[str], Callable[[bytes], Event]] | None = None,
        invoker: Invoker,
        inbox: Inbox,
        hooks: Hooks,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.worker = worker
        self.group_id = group_id
        self.routes = routes
        self.decode = decode
        self.decoder_for = decoder_for
        self.readers: dict[str, Callable[[bytes], Event]] = {}
        self.emitter = emitter
        self.invoker = invoker
        self.inbox = inbox
        self.hooks = hooks
        self.executor = executor
        # a store that sends the batch's inbox claim ahead (PostgreSQL), else None
        self.claim_ahead: ClaimAhead | None = getattr(inbox, "claim_ahead", None)

    def dispatch(self, records: list[Record], *, one_partition: bool | None = None) -> BatchOutput:
        """Handle the records in order (or per partition in the pool) and collect the output.

        A first pass reads each record's envelope (:func:`scan_headers`) and inbox key (its
        event id) for one batched :meth:`Inbox.seen` query; the second handles one record
        at a time. ``one_partition`` says whether every record is of one partition when
        the caller knows (the worker does, from the batch's first offsets); None: it is
        found out.

        A store that sends the query ahead (``claim_ahead``: PostgreSQL) is not waited
        for: its server claims the ids while the records are decoded and the handlers
        that take no context run, and its answer is read before anything that could
        touch the database or outlive the batch (a handler with a context, middleware, a
        failure, a dead letter) and at the end. When it names records handled already
        (a redelivery), the batch's output so far is dropped and the batch is handled
        again without them: only handlers without a context ran, and what they returned
        is discarded, so nothing of a duplicate is kept.
        """
        scanned = [scan_headers(record.headers) for record in records]
        emitter = self.emitter
        if None not in scanned:  # every envelope read by the fast path (C-level loops)
            read = cast("list[Fields]", scanned)
            keys: list[str] = list(map(_EVENT_ID, read))
            traces = emitter.tracing and all_valid(list(map(_TRACE, read)))
        else:
            keys = [
                fields[1] if fields is not None else inbox_key(record)
                for record, fields in zip(records, scanned, strict=True)
            ]
            # b"" (invalid) for a record on the slow path: that batch's traceparents are
            # then checked one by one
            traces = emitter.tracing and all_valid(
                [fields[3] if fields is not None else b"" for fields in scanned]
            )
        emitter.traces_valid = traces  # checked for the whole batch at once
        if self.executor is not None:
            return self._in_pool(records, keys, scanned, self._seen(keys))
        if one_partition is None:
            one_partition = sole_partition(records) is not None
        inbox, one, output = self.inbox, one_partition, BatchOutput()
        if self.claim_ahead is None:
            seen = self._seen(keys)
            self._sequence(records, keys, scanned, seen=seen, output=output, inbox=inbox, one=one)
            return output
        claim = self.claim_ahead(self.group_id, keys)  # read when a record needs it, or at the end
        try:
            self._sequence(
                records, keys, scanned, seen=set(), output=output, inbox=inbox, one=one, claim=claim
            )
        except _HandledAlreadyError as handled:  # handle the batch again, without them
            self._log_duplicates(handled.ids)
            output = BatchOutput()
            seen, failed = handled.ids, handled.failed
            self._sequence(
                records,
                keys,
                scanned,
                seen=seen,
                output=output,
                inbox=inbox,
                one=one,
                failed=failed,
            )
        return output

    def _seen(self, keys: list[str]) -> set[str]:
        """Return the keys handled already (and claim the rest), at once."""
        seen = self.inbox.seen(self.group_id, keys)
        self._log_duplicates(seen)
        return seen

    def _log_duplicates(self, seen: set[str]) -> None:
        """Say at debug level how many of the batch's records were handled already."""
        if seen and logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] %d duplicate(s) dropped", self.group_id, len(seen))

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
        self._sequence(records, keys, scanned, seen=seen, output=output, inbox=None, one=True)
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
        one: bool,
        claim: Callable[[], set[str]] | None = None,
        failed: _Slip | None = None,
    ) -> None:
        """Handle records in order into ``output``; stop early when the worker stops mid-retry.

        ``keys`` are the records' inbox keys and ``scanned`` their envelopes when
        :func:`scan_headers` could read them; ``inbox`` is the store whose connection
        handlers get as ``ctx.db`` (None: no database); ``one`` says that every record is
        of one partition (its next offset then follows from the last record handled).
        ``claim`` (optional) reads the answer of the inbox claim sent ahead: until it is
        read, ``seen`` holds only this batch's own repeats; it is read (raising
        :class:`_HandledAlreadyError` if it names any record) before the first record
        that leaves the inlined path, and at the end. ``failed`` (optional) is the record
        whose handler raised in the pass that error ended (see :meth:`_inlined_to`).

        Records alternate between :meth:`_inlined` (the hot path: a new record of a
        handled type whose handler takes no context and succeeds at once) and
        :meth:`_off_path` (everything else), over one iterator.
        """
        db = _connected(inbox) if claim is None else None  # found when the claim is read
        items = enumerate(zip(records, keys, scanned, strict=True))
        done, at = len(records), 0  # ``at``: the index of the record ``items`` yields next
        while True:
            slip, failed = self._inlined_to(items, seen, output, failed, at)
            if claim is not None:
                claim, db = _read_claim(claim, inbox, slip)
            if slip is None:
                break
            at = slip.index + 1
            if not self._off_path(slip, db, seen, output):
                done = slip.index  # abandoned: this record and the rest are not handled
                break
        handled_up_to(records, done, output.next_offsets, one=one)

    def _inlined_to(
        self,
        items: Iterator[tuple[int, _Item]],
        seen: set[str],
        output: BatchOutput,
        failed: _Slip | None,
        at: int,
    ) -> tuple[_Slip | None, _Slip | None]:
        """Run :meth:`_inlined`; return its slip and ``failed`` if it is still to come.

        ``failed`` is a record whose handler raised in the batch's first pass: its handler
        is not called again for that attempt; when the inlined path reaches it, it is
        returned as the slip (its failure then goes to the invoker), unless it turned out
        to be handled already.
        """
        if failed is None:
            return self._inlined(items, seen, output), None
        slip = self._inlined(islice(items, failed.index - at), seen, output)
        if slip is not None:
            return slip, failed
        next(items)  # the failed record itself
        if failed.key in seen:  # a redelivery: nothing to retry
            return self._inlined(items, seen, output), None
        return failed, None

    def _inlined(
        self, items: Iterator[tuple[int, _Item]], seen: set[str], output: BatchOutput
    ) -> _Slip | None:
        """Handle records while each takes the inlined path; return the first that does not.

        A record leaves it when its envelope needs the slow reader, no route or a route
        with a context takes it, middleware wraps dispatch, a retry of it is due, its
        payload does not decode or its handler raises; what it left with is in the
        returned :class:`_Slip`. None: every record was handled.
        """
        routes = self.routes
        emit_one = self.emitter.emit_one
        retrying = self.invoker.attempts  # event ids of deferred retries
        hooked = self.hooks.dispatch
        out_ids = output.ids
        out_records = output.records
        for index, (record, key, scan) in items:
            if key in seen:
                continue
            if scan is None:
                return _Slip(index, record, key, scan, None)
            route = routes.get(scan[0])
            if route is None or hooked or route.takes_context or (retrying and key in retrying):
                return _Slip(index, record, key, scan, route)
            try:
                read = route.read or self._reader(route)
                event = read(record.value or b"")
            except Exception as exc:  # DecodeError, UnknownEventError, a serde bug
                return _Slip(index, record, key, scan, route, error=exc)
            try:  # the handler and its emitted records, inlined (no call per record)
                result = route.func(event)
                if isinstance(result, Event):
                    out_records.append(emit_one(route, scan, result))
                elif result is not None:
                    events = as_events(route.step_id, [], result)
                    out_records.extend(self.emitter.emit(route, scan, events))
            except Exception as exc:
                return _Slip(index, record, key, scan, route, event=event, error=exc)
            seen.add(key)
            out_ids.append(key)
        return None

    def _off_path(self, slip: _Slip, db: Inbox | None, seen: set[str], output: BatchOutput) -> bool:
        """Handle a record that left the inlined path; return False when it was abandoned."""
        record, key, route = slip.record, slip.key, slip.route
        if slip.error is not None and route is not None and slip.scan is not None:
            if slip.event is None:  # its payload did not decode
                self._undecodable(record, key, slip.error, seen, output)
                return True
            item = (record, slip.scan)
            emitted = self.invoker.after_failure(route, item, slip.event, slip.error, info=None)
        else:
            fields = slip.scan
            if fields is None:
                fields = self._read_fields(record, key, seen, output)
                if fields is None:
                    return True
                route = self.routes.get(fields[0])
            if route is None:
                self._not_ours((record, fields), seen, output)
                return True
            emitted = self._dispatch_one(route, (record, fields), key, db, seen=seen, output=output)
        return not self._settle(key, emitted, seen, output)

    @staticmethod
    def _settle(
        key: str, emitted: list[OutboxRecord] | None, seen: set[str], output: BatchOutput
    ) -> bool:
        """Account for a record handled off the inlined path; return True when abandoned.

        ``emitted`` is what :meth:`_dispatch_one` or the invoker's failure handling
        returned: the records to add, ``_SKIPPED`` (accounted for already) or None (the
        worker stopped during a retry's backoff: the record was not handled).
        """
        if emitted is _SKIPPED:
            return False
        if emitted is None:
            output.abandoned = True
            return True
        seen.add(key)
        output.ids.append(key)
        output.records.extend(emitted)
        return False

    def _reader(self, route: Route) -> Callable[[bytes], Event]:
        """Return (and remember, in ``route.read``) the function decoding ``route``'s payloads."""
        decoder_for, decode, event_type = self.decoder_for, self.decode, route.event_type
        read = self.readers.get(event_type)
        if read is None:
            if decoder_for is None:
                read = lambda data: decode(event_type, data)  # noqa: E731
            else:
                read = decoder_for(event_type)
            self.readers[event_type] = read
        route.read = read
        return read

    def _dispatch_one(
        self,
        route: Route,
        item: Item,
        key: str,
        db: Inbox | None,
        *,
        seen: set[str],
        output: BatchOutput,
    ) -> list[OutboxRecord] | None:
        """Dispatch one record: a handler taking a context, or between dispatch hooks.

        Returns what :meth:`_sequence` adds to the output: the emitted records, None when
        abandoned, or ``_SKIPPED`` when the record was dead-lettered as undecodable.
        """
        attempt = self.invoker.attempts.pop(key, 1)
        info = event_info(route, item) if self.hooks.dispatch else None
        worker = self.worker
        if info is not None:
            info.attempt = attempt
            for hook in self.hooks.before_dispatch:
                hook(worker, info)
        record, fields = item
        try:
            event = self.decode(fields[0], record.value or b"")
        except Exception as exc:
            letter = self._undecodable(record, key, exc, seen, output)
            if info is not None:
                info.outcome, info.error = Outcome.DEAD_LETTERED, exc
                self._after_dispatch(info, [] if letter is None else [letter])
            return _SKIPPED
        emitted: list[OutboxRecord] | None
        if route.takes_context:
            emitted = self.invoker.invoke(route, item, event, db, info=info, attempt=attempt)
        else:
            try:
                result = route.func(event)
                if isinstance(result, Event):
                    emitted = [self.emitter.emit_one(route, fields, result)]
                elif result is None:
                    emitted = []
                else:
                    emitted = self.emitter.emit(route, fields, as_events(route.step_id, [], result))
            except Exception as exc:
                emitted = self.invoker.after_failure(
                    route, item, event, exc, info=info, attempt=attempt
                )
        if info is not None:
            self._after_dispatch(info, [] if emitted is None else emitted)
        return emitted

    def _after_dispatch(self, info: EventInfo, emitted: list[OutboxRecord]) -> None:
        """Call the middleware's after-dispatch hooks with ``info``'s outcome."""
        worker = self.worker
        for hook in self.hooks.after_dispatch:
            hook(worker, info, info.outcome, emitted, info.error)


@dataclass(slots=True)
class _Slip:
    """A record that left the inlined path: where, what it is, and what went wrong if anything.

    ``error`` with ``event`` None: the payload did not decode; with ``event``: the handler
    raised. No error: the record needs the slow path (its envelope, route or context).
    """

    index: int
    record: Record
    key: str
    scan: Fields | None
    route: Route | None
    event: Event | None = None
    error: Exception | None = None


class _HandledAlreadyError(Exception):
    """The inbox claim sent ahead names records of the batch that were handled already.

    ``failed`` is the record whose handler raised just before the answer was read, if
    that is why it was read: the batch's second pass gives its failure to the invoker
    instead of calling the handler again (one call per attempt, as without the claim).
    """

    def __init__(self, ids: set[str], failed: _Slip | None) -> None:
        super().__init__(f"{len(ids)} record(s) of the batch were handled already")
        self.ids = ids
        self.failed = failed


def _read_claim(
    claim: Callable[[], set[str]], inbox: Inbox | None, slip: _Slip | None
) -> tuple[None, Inbox | None]:
    """Read the claim sent ahead; return (no claim, ``ctx.db``'s store) or raise if handled.

    ``slip`` is the record that made it be read (None: the end of the batch).
    """
    handled = claim()
    if handled:
        raised = slip is not None and slip.event is not None and slip.error is not None
        raise _HandledAlreadyError(handled, slip if raised else None)
    return None, _connected(inbox)


def _connected(inbox: Inbox | None) -> Inbox | None:
    """Return the inbox whose connection handlers get as ``ctx.db``, or None (no database)."""
    return inbox if inbox is not None and inbox.connection is not None else None
