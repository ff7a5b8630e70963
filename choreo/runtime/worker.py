"""The worker's poll loop: start, poll a batch, hand it on, stop, close; rebalances.

One :class:`Worker` runs one service. Each polled batch is handled in ONE local
transaction of its :class:`~choreo.store.base.Store`:

1. the :class:`~choreo.runtime.dispatch.Dispatcher` reads every record's envelope, drops
   the event ids the inbox has seen, and calls the handlers (retries, business failures
   and dead letters included); the :class:`~choreo.runtime.emit.Emitter` turns what they
   emit into records with deterministic ids and propagated headers;
2. the handled ids are recorded in the inbox, and the delivery strategy
   (:mod:`choreo.runtime.delivery`) stores the output, commits the transaction, publishes
   and commits the offsets in the order its guarantee needs: at-least-once (outbox,
   publish, flush, commit offsets) or, with ``WorkerConfig(exactly_once=True)``,
   transactional (outputs and offsets in one Kafka transaction).

A crash anywhere loses nothing: unsent outbox records are replayed at start-up on a store
only this process writes, and on a shared store the outbox relay of any live replica
claims and publishes them (in either delivery mode; :class:`~choreo.store.relay.OutboxRelay`,
tuned by ``WorkerConfig.relay_*``); records whose offsets were not committed are
redelivered and dropped by the inbox, and a record published twice keeps its event id so
the next inbox drops the copy.

Concurrency: with ``WorkerConfig(concurrency=N)`` and N > 1, the partitions of a batch
are handled in a pool of N threads (records of one partition stay in order on one
thread). Handlers then get ``ctx.db = None`` and no savepoints: the inbox and outbox
writes are made by the loop thread after the pool finishes, in the same single
transaction. A handler that writes its own tables through ``ctx.db`` needs
``concurrency=1``.

``async def`` handlers are awaited in their turn, on one event loop per thread kept for
the worker's lifetime (:mod:`choreo.runtime.aio`): order, retries and the batch's
transaction are those of a plain handler.

Rebalances: a revocation is reported inside ``poll``, so no batch is being handled when
partitions are revoked. In :meth:`Worker.run`'s loop on PostgreSQL the batch before may
still have its COMMIT sent behind (``WorkerConfig.commit_behind``): the revocation
callback settles it first (published, its offsets committed; if that COMMIT failed, the
records the poll returns are given back until the consumer was rewound), then lets the
delivery strategy settle what is pending for the revoked partitions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from choreo.choreography.service import Service
from choreo.errors import ConfigurationError, FatalError, TransportError
from choreo.model.context import EventLogger
from choreo.runtime.aio import EventLoops, refuse_running_loop
from choreo.runtime.config import WorkerConfig, topic_replication
from choreo.runtime.delivery import Batch, Delivery, DeliveryLink, Offsets, delivery_for
from choreo.runtime.dispatch import Dispatcher
from choreo.runtime.emit import Emitter
from choreo.runtime.incidents import fatal_reason, log_retried_failure
from choreo.runtime.invoke import Invoker
from choreo.runtime.middleware import Hooks, Middleware, default_middleware
from choreo.runtime.pauses import Pauses, first_offsets
from choreo.runtime.refusal import Refusals
from choreo.runtime.routing import build_routes
from choreo.runtime.serdes import Serde
from choreo.store import Inbox, MemoryInbox, OutboxRelay, refuse_unshared_store, service_component
from choreo.transports.base import Consumer, Record, TopicPartition, Transport

__all__ = ["Serde", "Worker"]

logger = logging.getLogger(__name__)


class Worker:
    """Runs one service: consumes its event types and handles them (see the module docs).

    ``serde`` encodes and decodes the payloads; ``inbox`` defaults to a
    :class:`~choreo.store.memory.MemoryStore` (pass a
    :class:`~choreo.store.sqlite.SqliteStore` for durability); ``delivery`` defaults to
    the strategy ``config`` selects (:func:`~choreo.runtime.delivery.delivery_for`);
    ``middleware`` hooks around the loop's steps (:mod:`choreo.runtime.middleware`; None
    gives :func:`~choreo.runtime.middleware.default_middleware`, a list replaces it). Use
    :meth:`run` in a process, or :meth:`run_once` to drive it step by step (tests,
    :mod:`choreo.testing`).
    """

    def __init__(
        self,
        service: Service,
        transport: Transport,
        serde: Serde,
        *,
        config: WorkerConfig | None = None,
        inbox: Inbox | None = None,
        delivery: Delivery | None = None,
        middleware: Sequence[Middleware] | None = None,
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
        self.topics: tuple[str, ...] = tuple(
            sorted({config.topic_naming(t) for t in service.consumed_types})
        )
        self.deadletter_topic = config.deadletter_naming(service.name)
        self.delivery: Delivery = (
            delivery if delivery is not None else delivery_for(transport, config, service.name)
        )
        self.hooks = Hooks(default_middleware() if middleware is None else middleware)
        self.emitter = Emitter(
            serde.encode, tracing=config.tracing, encoder_for=getattr(serde, "encoder_for", None)
        )
        self._loops = EventLoops()  # where async handlers are awaited
        self._awaits = any(spec.is_async for spec in service.handlers)
        self.dispatcher = Dispatcher(
            worker=self,
            group_id=self.group_id,
            routes=build_routes(
                service,
                naming=config.topic_naming,
                default=config.retry,
                compensation=config.compensation_retry,
                loops=self._loops,
            ),
            decode=serde.decode,
            decoder_for=getattr(serde, "decoder_for", None),
            emitter=self.emitter,
            invoker=Invoker(
                worker=self,
                service=service.name,
                emitter=self.emitter,
                deadletter_topic=self.deadletter_topic,
                wait=self._wait,
                hooks=self.hooks,
                max_inline_backoff=config.max_inline_backoff,
            ),
            inbox=self.inbox,
            hooks=self.hooks,
        )
        self._log = EventLogger(
            logger, {"service": service.name, "event_type": "-", "correlation_id": "-"}
        )
        self.refusals: Refusals | None = None
        """Refuses late commands of sagas compensated here (:mod:`choreo.runtime.refusal`)."""
        if Refusals.applies(service):
            if config.concurrency > 1:
                self._log.warning(
                    "concurrency=%d: late commands are not refused", config.concurrency
                )
            else:
                self.refusals = Refusals(self.inbox, self.group_id, config.clock_ms)
                self.refusals.install(self.dispatcher.routes)
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._started = False
        self._closed = False
        self._closing = False
        self._stay_in_group = False  # stopped on a fatal client error: do not leave
        self._last_prune = time.monotonic()
        self._relay: OutboxRelay | None = None
        self._pauses = Pauses(self._log)  # partitions of deferred retries
        # a revocation in the current poll found the batch whose COMMIT was behind failed
        self._failed_on_revoke = False

    def __repr__(self) -> str:
        return f"Worker({self.service.name!r}, group={self.group_id!r}, topics={self.topics})"

    # --- lifecycle -------------------------------------------------------------------

    def _own_topics(self) -> tuple[str, ...]:
        """Return every topic this worker reads or may write, sorted: its inputs, the
        topics of the events its handlers declare (emits and fails_with; an undeclared
        event is refused) and its dead-letter topic."""
        naming = self.config.topic_naming
        emitted = {naming(t) for spec in self.service.handlers for t in spec.emitted_types}
        return tuple(sorted({*self.topics, *emitted, self.deadletter_topic}))

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
        own_topics = self._own_topics()
        if config.create_topics:
            self.transport.create_topics(
                list(own_topics), partitions=config.topic_partitions, **topic_replication(config)
            )
        self.inbox.migrate(service_component(self.service.name), self.service.migrations)
        if not self.service.state_in_log:  # an orchestrator's state is the log
            refuse_unshared_store(
                self.inbox, self.transport, self.group_id, instance_id=config.instance_id
            )
        consumer = self._consumer = self.transport.consumer(
            self.group_id, from_beginning=config.from_beginning, instance_id=config.instance_id
        )
        consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        if config.concurrency > 1:
            self._executor = self.dispatcher.executor = ThreadPoolExecutor(
                config.concurrency, thread_name_prefix=f"choreo-{self.service.name}"
            )
            if self.inbox.connection is not None:
                self._log.warning(
                    "concurrency=%d: handlers run on pool threads and get ctx.db = None",
                    config.concurrency,
                )
        self._started = True
        self._log.info(
            "worker started: group %s, topics %s%s",
            self.group_id,
            ", ".join(self.topics),
            ", exactly-once" if config.exactly_once else "",
        )
        self.delivery.open(
            DeliveryLink(consumer, self.inbox, self.origin, self._rewind, self._log, own_topics)
        )
        if self.inbox.shared:  # rows no live writer will publish (both delivery modes)
            self._relay = OutboxRelay(
                self.inbox,
                self.transport,
                self.origin,
                interval=config.relay_interval,
                min_age=config.relay_min_age,
                limit=config.relay_batch,
                flush_timeout=config.flush_timeout,
            )
            self._relay.start()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or the event given to :meth:`run` is set)."""
        return self._stop.is_set()

    def _wait(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped meanwhile; return True when stopped."""
        return self._stop.wait(seconds)

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Handle batches until ``stop_event`` (or :meth:`stop`) is set, then close.

        ``stop_event`` becomes the worker's stop signal. A retriable infrastructure error
        (broker, database) is logged and the worker backs off for ``config.error_backoff``
        seconds while it keeps polling with its partitions paused (so the group does not
        rebalance); the batch in hand was rewound, so nothing is skipped. A fatal error (a
        fenced producer, refused authentication or authorization, a configuration error)
        stops the worker: it closes and raises :class:`~choreo.errors.FatalError` saying
        why (``choreo run`` then exits non-zero).
        """
        if stop_event is not None:
            self._stop = stop_event
        try:
            self.start()
            while not self._stop.is_set():
                try:
                    self._run_once(self.config.poll_timeout, leave_behind=True)
                except Exception as exc:
                    self._stop_if_fatal(exc)
                    log_retried_failure(self._log, exc, self.config.error_backoff)
                    try:
                        self._back_off()
                    except TransportError as during:  # e.g. the consumer fenced meanwhile
                        self._stop_if_fatal(during)
                        raise
        finally:
            self.close()

    def _stop_if_fatal(self, exc: Exception) -> None:
        """Raise :class:`~choreo.errors.FatalError` saying why when ``exc`` ends the worker."""
        reason = fatal_reason(exc, getattr(self.delivery, "transactional_id", None))
        if reason is not None:
            # a fenced member's instance id is another live process's now: never remove it
            self._stay_in_group = isinstance(exc, TransportError)
            self._log.debug("worker stopping: %s", reason)  # the FatalError says it
            raise FatalError(f"worker {self.service.name} stopped: {reason}") from exc

    def _back_off(self) -> None:
        """Wait ``config.error_backoff`` seconds polling with every partition paused."""
        if self._consumer is None:
            self._stop.wait(self.config.error_backoff)
            return
        self._pauses.back_off(
            self._consumer,
            self.config.error_backoff,
            stop=self._stop,
            max_records=self.config.max_poll_records,
            poll_timeout=self.config.poll_timeout,
            rewind=self._rewind,
        )

    def close(self) -> None:
        """Deliver what is pending (best effort), then close the delivery and the consumer.

        The inbox is closed only when the worker created it.
        """
        if self._closed:
            return
        self._closing = True
        if self._relay is not None:
            self._relay.stop()
        try:
            if self._started:
                try:
                    self._settle_delivery()
                except Exception as exc:  # its offsets stay uncommitted: read again later
                    self._log.warning("the last batch's store commit failed at close: %s", exc)
                self.delivery.close()
        finally:
            self._closed = True
            if self._consumer is not None:
                try:
                    leave = self.config.leave_group_on_close and not self._stay_in_group
                    self._consumer.close(leave_group=leave)
                except TransportError as exc:
                    self._log.warning("closing %s failed: %s", type(self._consumer).__name__, exc)
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._loops.close()
            if self._owns_inbox:
                self.inbox.close()
            self._log.info("worker closed")

    # --- the loop --------------------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> int:
        """Poll one batch and handle it completely; return how many records it held.

        Duplicates and dead-lettered records count as handled. ``timeout`` defaults to
        ``config.poll_timeout``. Raises on infrastructure errors after rewinding. When it
        returns the batch is delivered: its store commit is never left behind (only
        :meth:`run`'s loop leaves it for the next batch, see ``WorkerConfig.commit_behind``).
        """
        return self._run_once(timeout, leave_behind=False)

    def _run_once(self, timeout: float | None, *, leave_behind: bool) -> int:
        """:meth:`run_once`; ``leave_behind``: the batch's commit may be settled later."""
        self.start()
        if self._awaits:
            refuse_running_loop()
        self.delivery.tick()
        assert self._consumer is not None
        timeout = self.config.poll_timeout if timeout is None else timeout
        if self._pauses:
            timeout = self._pauses.resume_due(self._consumer, timeout)
        for hook in self.hooks.before_poll:
            hook(self)
        records = self._poll(timeout)
        for hook in self.hooks.after_poll:
            hook(self, records)
        if not records:
            self.delivery.idle()
            return 0
        handled = self._handle_batch(records)
        if not leave_behind:
            self._settle_delivery()
        return handled

    def _poll(self, timeout: float) -> list[Record]:
        """Poll a batch; a batch whose store commit was sent behind is settled before a
        poll that would wait (its output must not wait for the next records).

        When a revocation during the poll found that batch's COMMIT failed, the records
        returned (of the partitions kept, after the failed batch) are given back: nothing
        after it is handled, nor its offsets committed, before the next tick rewound it.
        """
        assert self._consumer is not None
        self._failed_on_revoke = False
        records: list[Record] = []
        if self.delivery.behind:
            records = self._consumer.poll(self.config.max_poll_records, 0.0)
            if not records:
                self._settle_delivery()
        if not records:
            records = self._consumer.poll(self.config.max_poll_records, timeout)
        if records and self._failed_on_revoke:
            # a revocation during the poll found the batch behind failed: these records of
            # the partitions kept come after it; given back until the next tick rewound it
            self._rewind(first_offsets(records))
            return []
        return records

    def _settle_delivery(self) -> None:
        """Finish a batch whose store commit was sent behind and run its after-commit hooks."""
        offsets = self.delivery.settle()
        if offsets is not None:
            for hook in self.hooks.after_commit:
                hook(self, offsets)

    def _handle_batch(self, records: list[Record]) -> int:
        """Handle one polled batch in one store transaction, then let delivery commit it."""
        inbox = self.inbox
        now = self.config.clock_ms()
        self.emitter.start_batch(now)
        first = first_offsets(records)
        if self.refusals is not None:
            self.refusals.arm(records)  # guards only for a batch with commands
        inbox.begin()
        try:
            self.delivery.stage()
            self._maybe_prune()
            output = self.dispatcher.dispatch(records, one_partition=len(first) == 1)
            if output.ids:
                inbox.add(self.group_id, output.ids, now)
            # the batch before, if its commit was sent behind: the database committed it
            # while this one was handled; published now, before this one is delivered
            self._settle_delivery()
        except BaseException:
            self._abandon_batch(first)
            raise
        hooks = self.hooks
        offsets = {TopicPartition(t, p): o for (t, p), o in output.next_offsets.items()}
        try:
            for hook in hooks.after_emit:
                hook(self, output.records)
            for hook in hooks.before_commit:
                hook(self, offsets)
        except BaseException:
            self._abandon_batch(first)
            raise
        self.delivery.deliver(Batch(output.records, offsets, first))
        if not self.delivery.behind:  # else once settled (the next batch, poll, close)
            for hook in hooks.after_commit:
                hook(self, offsets)
        if output.abandoned:
            self._rewind({tp: offsets.get(tp, offset) for tp, offset in first.items()})
            if self._consumer is not None:
                self._pauses.defer(self._consumer, self.dispatcher.invoker.take_deferred())
        return len(records)

    def _abandon_batch(self, first: Offsets) -> None:
        """Roll the batch in hand back and rewind to its first offsets; then settle the
        batch whose commit was sent behind (the rollback read its answer): published if
        it committed, else rewound in turn at the next tick (its offsets are earlier)."""
        self.inbox.rollback()
        self._rewind(first)
        if self.delivery.behind:
            try:
                self._settle_delivery()
            except Exception as exc:  # the error in hand is the one to raise
                self._log.debug("the batch before failed too: %s", exc)

    def _maybe_prune(self) -> None:
        """Prune old inbox rows when the retention interval has passed (inside the batch)."""
        retention = self.config.inbox_retention
        if retention is None:
            return
        now = time.monotonic()
        if now - self._last_prune < self.config.prune_interval:
            return
        self._last_prune = now
        removed = self.inbox.prune(self.group_id, self.config.clock_ms() - int(retention * 1000))
        if removed:
            self._log.info("pruned %d inbox row(s) older than %.0f s", removed, retention)

    def _rewind(self, first: Offsets) -> None:
        """Seek each partition back to ``first`` so its records are polled again."""
        if not first or self._consumer is None:
            return
        for tp, offset in first.items():
            try:
                self._consumer.seek(tp, offset)
            except TransportError as exc:  # no longer assigned: its new owner reads it
                self._log.debug("cannot rewind %s[%d]: %s", tp.topic, tp.partition, exc)

    # --- rebalance ---------------------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Tell the middleware and the delivery strategy which partitions this worker now owns."""
        for hook in self.hooks.on_assign:
            hook(self, partitions)
        if not self._closing:
            self.delivery.assign(partitions)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Let delivery settle the revoked partitions; no batch is ever in flight here."""
        for hook in self.hooks.on_revoke:
            hook(self, partitions)
        self._pauses.forget(partitions)
        if self._closing:
            return
        try:
            self._settle_delivery()
        except Exception as exc:  # its offsets stay uncommitted: the next owner reads it
            self._log.warning("the last batch's store commit failed on revoke: %s", exc)
            self._failed_on_revoke = True  # the partitions kept are rewound at the next tick
        self.delivery.revoke(partitions)
