"""Starting sagas from outside handlers (an HTTP endpoint, a scheduled job) through the outbox.

:class:`Publisher` (alias :data:`SagaStarter`) writes a saga's start event into the same
outbox the service's worker uses, optionally in one local transaction with the caller's
own database work, then publishes and flushes it::

    starter = Publisher(orders, transport, serde, inbox=SqliteInbox("orders.db"))

    def create_order(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO orders (id, total) VALUES (?, ?)", (order_id, total))

    cid = starter.start(fulfilment, OrderCreated(...), db_work=create_order)

With a :class:`~choreo.store.sqlite.SqliteStore`, "insert the order row" and "emit
OrderCreated" commit together or not at all; a record whose publishing failed stays in the
outbox and goes out with the next :meth:`Publisher.start` or :meth:`Publisher.flush`.

Each :meth:`Publisher.start` waits for the broker's acknowledgement (a flush, a network
round trip). To open many sagas, do it inside :meth:`Publisher.batch`: each start still
commits its own local transaction and is published at once, but the acknowledgements are
awaited once, when the block ends, so a thousand orders cost one round trip instead of a
thousand::

    with starter.batch():
        for request in requests:
            place_order(starter, orders, request)  # calls starter.start(..., db_work=...)

:meth:`Publisher.start_many` stores a list of start events in ONE local transaction (all
or none) and flushes once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError, TransportError
from choreo.model.envelope import Envelope
from choreo.model.events import Event, event_type_of
from choreo.runtime.config import WorkerConfig
from choreo.runtime.tracing import ambient_traceparent, new_traceparent
from choreo.runtime.worker import Serde
from choreo.store import Inbox, MemoryInbox
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Producer, Transport

__all__ = ["Publisher", "SagaStarter"]

logger = logging.getLogger(__name__)


class Publisher:
    """Opens sagas on behalf of ``service``: start events go through the outbox, then Kafka.

    ``config`` supplies topic naming, tracing and the flush timeout (a
    :class:`~choreo.runtime.config.WorkerConfig`); ``inbox`` is the store whose outbox is
    used (share the service's :class:`~choreo.store.sqlite.SqliteStore` to make the
    caller's database work atomic with the event). Thread-safe.
    """

    def __init__(
        self,
        service: Service,
        transport: Transport,
        serde: Serde,
        *,
        inbox: Inbox | None = None,
        config: WorkerConfig | None = None,
    ) -> None:
        self.service = service
        self.transport = transport
        self.serde = serde
        self.config = config if config is not None else WorkerConfig()
        self.inbox: Inbox = inbox if inbox is not None else MemoryInbox()
        self._owns_inbox = inbox is None
        self.origin = f"publisher.{service.name}"
        self._lock = threading.RLock()
        self._producer: Producer | None = None
        self._pending: list[OutboxRecord] = []
        self._unacked: list[OutboxRecord] = []  # published, not yet flushed
        self._local = threading.local()  # .depth: the calling thread's open batch() blocks
        self._closed = False

    def start(
        self,
        saga: Saga,
        event: Event,
        *,
        correlation_id: str | None = None,
        db_work: Callable[[Any], None] | None = None,
    ) -> str:
        """Publish ``event`` as the start of a new ``saga``; return its correlation id.

        The envelope has role ``start``, step ``<service>.start`` and a new correlation
        id (the start event's id) unless ``correlation_id`` is given. ``db_work`` is
        called with the inbox's connection (``None`` for a memory inbox) inside the same
        local transaction that stores the event. Returns once the broker acknowledged the
        event, or, inside :meth:`batch`, once it is stored and handed to the producer.
        Raises :class:`~choreo.errors.ConfigurationError` if the service does not declare
        that it starts ``saga`` or ``event`` is not the saga's start event.
        """
        record = self._start_record(saga, event, correlation_id)
        self._start_records([record], db_work)
        cid = record.key.decode() if record.key is not None else ""
        logger.info(
            "[%s %s cid=%s] started saga %s",
            self.service.name,
            event_type_of(event),
            cid,
            saga.name,
        )
        return cid

    def start_many(
        self,
        saga: Saga,
        events: Iterable[Event],
        *,
        correlation_ids: Iterable[str | None] | None = None,
        db_work: Callable[[Any], None] | None = None,
    ) -> list[str]:
        """Start one ``saga`` per event in one local transaction and one flush; return the ids.

        ``correlation_ids`` (one per event, None for a new one) are as for :meth:`start`;
        ``db_work`` is called once, in the same transaction: every start event is stored
        (with the caller's rows) or none is. Returns once the broker acknowledged them
        (inside :meth:`batch`: once they are handed to the producer).
        """
        events = list(events)
        ids = list(correlation_ids) if correlation_ids is not None else [None] * len(events)
        if len(ids) != len(events):
            raise ConfigurationError(
                f"start_many got {len(events)} events but {len(ids)} correlation ids"
            )
        records = [self._start_record(saga, e, cid) for e, cid in zip(events, ids, strict=True)]
        self._start_records(records, db_work)
        started = [r.key.decode() if r.key is not None else "" for r in records]
        logger.info("[%s] started %d %s saga(s)", self.service.name, len(started), saga.name)
        return started

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within the block, :meth:`start` does not wait for the broker; the block's end does.

        Each start inside still stores its event (and ``db_work``) in its own local
        transaction and publishes it at once; leaving the block flushes the producer once
        and raises delivery failures as :meth:`start` would (with a durable outbox they
        are logged and the events kept for a later :meth:`flush`). The block's end flushes
        even when the block raises. Applies to the calling thread; blocks may nest (the
        outermost flushes).
        """
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            yield
        except BaseException:
            self._local.depth = depth
            if depth == 0:
                try:
                    self._end_batch()
                except TransportError as exc:  # the block's own error matters more
                    logger.warning("[%s] flushing the batch failed: %s", self.service.name, exc)
            raise
        self._local.depth = depth
        if depth == 0:
            self._end_batch()

    def _end_batch(self) -> None:
        """Flush what the batch published and forget it from the outbox."""
        with self._lock:
            if not self._closed and self._producer is not None:
                self._deliver()

    def _start_records(
        self, records: list[OutboxRecord], db_work: Callable[[Any], None] | None
    ) -> None:
        """Store ``records`` with ``db_work`` in one transaction; publish, flush unless batched."""
        with self._lock:
            self._check_open()
            self._load_leftovers()
            inbox = self.inbox
            inbox.begin()
            try:
                if db_work is not None:
                    db_work(inbox.connection)
                inbox.enqueue(self.origin, records)
            except BaseException:
                inbox.rollback()
                raise
            inbox.commit()
            self._pending.extend(records)
            if getattr(self._local, "depth", 0):
                self._publish_pending()
            else:
                self._deliver()

    def _start_record(self, saga: Saga, event: Event, correlation_id: str | None) -> OutboxRecord:
        """Return the outbox record of ``event`` starting ``saga`` (checked, encoded)."""
        if saga.name not in {s.name for s in self.service.started_sagas}:
            raise ConfigurationError(
                f"service {self.service.name} does not start saga {saga.name}; "
                f"declare it with {self.service.name}.starts(saga)"
            )
        if not isinstance(event, saga.start):
            raise ConfigurationError(
                f"saga {saga.name} starts with {event_type_of(saga.start)}, "
                f"not {type(event).__qualname__}"
            )
        event_type = event_type_of(event)
        envelope = Envelope.start(
            event_type,
            saga=saga.name,
            service=self.service.name,
            correlation_id=correlation_id,
            step=self.service.start_step_id(saga),
            traceparent=(ambient_traceparent() or new_traceparent())
            if self.config.tracing
            else None,
            produced_at_ms=self.config.clock_ms(),
        )
        return OutboxRecord(
            envelope.event_id,
            self.config.topic_naming(event_type),
            envelope.correlation_id.encode(),
            self.serde.encode(event),
            envelope.to_headers(),
        )

    def flush(self) -> None:
        """Publish the records still in this publisher's outbox (e.g. after a broker outage)."""
        with self._lock:
            self._check_open()
            self._load_leftovers()
            self._deliver()

    def close(self) -> None:
        """Try to publish what is pending, then close the producer (and an owned inbox)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._pending or self._unacked:
                    self._deliver()
            except TransportError as exc:
                logger.warning("[%s] start events left in the outbox: %s", self.service.name, exc)
            finally:
                if self._producer is not None:
                    self._producer.close()
                if self._owns_inbox:
                    self.inbox.close()

    def _check_open(self) -> None:
        """Raise ConfigurationError once closed."""
        if self._closed:
            raise ConfigurationError("this publisher is closed")

    def _load_leftovers(self) -> None:
        """On first use, take over records a previous run left unsent."""
        if self._producer is None:
            self._producer = self.transport.producer()
            leftovers = self.inbox.pending(self.origin)
            if leftovers:
                logger.warning(
                    "[%s] replaying %d unsent start event(s)", self.service.name, len(leftovers)
                )
                self._pending = leftovers + self._pending

    def _publish_pending(self) -> None:
        """Hand the stored records to the producer; they await the next flush as unacked.

        A publishing failure is raised when the outbox is not durable; with a durable one
        the records stay stored (and pending) and the failure is only logged.
        """
        assert self._producer is not None
        pending = self._pending
        publish = self._producer.publish
        published = 0
        try:
            for r in pending:
                publish(r.topic, r.value, key=r.key, headers=r.headers)
                published += 1
        except TransportError as exc:
            if not self.inbox.durable:
                raise
            logger.warning("[%s] start event(s) kept in the outbox: %s", self.service.name, exc)
        finally:
            self._unacked.extend(pending[:published])
            del pending[:published]

    def _deliver(self) -> None:
        """Publish the pending records, flush, then delete every acknowledged one from the outbox.

        A delivery failure is raised when the outbox is not durable; with a durable one
        the records stay stored (to be published again by :meth:`flush` or the next
        start) and the failure is only logged.
        """
        assert self._producer is not None
        if not self._pending and not self._unacked:
            return
        try:
            self._publish_pending()
            self._producer.flush(self.config.flush_timeout)
        except TransportError as exc:
            self._pending[:0], self._unacked = self._unacked, []  # publish them again later
            if not self.inbox.durable:
                raise
            logger.warning(
                "[%s] %d start event(s) kept in the outbox for later: %s",
                self.service.name,
                len(self._pending),
                exc,
            )
            return
        sent, self._unacked = self._unacked, []
        inbox = self.inbox
        inbox.begin()
        try:
            inbox.mark_sent([r.id for r in sent])
        except BaseException:
            inbox.rollback()
            raise
        inbox.commit()


SagaStarter = Publisher
"""Another name for :class:`Publisher`, for code that reads better with it."""
