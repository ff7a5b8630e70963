"""Starting sagas from outside handlers (an HTTP endpoint, a scheduled job) through the outbox.

:class:`Publisher` (alias :data:`SagaStarter`) writes a saga's start event into the same
outbox the service's worker uses, optionally in one local transaction with the caller's
own database work, then publishes and flushes it::

    starter = Publisher(orders, transport, serde, inbox=SqliteInbox("orders.db"))

    def create_order(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO orders (id, total) VALUES (?, ?)", (order_id, total))

    cid = starter.start(fulfilment, OrderCreated(...), db_work=create_order)

With a :class:`~choreo.runtime.inbox.SqliteInbox`, "insert the order row" and "emit
OrderCreated" commit together or not at all; a record whose publishing failed stays in the
outbox and goes out with the next :meth:`Publisher.start` or :meth:`Publisher.flush`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from choreo.envelope import Envelope
from choreo.errors import ConfigurationError, TransportError
from choreo.events import Event, event_type_of
from choreo.runtime.config import WorkerConfig
from choreo.runtime.inbox import Inbox, MemoryInbox
from choreo.runtime.outbox import OutboxRecord
from choreo.runtime.tracing import new_traceparent
from choreo.runtime.worker import Serde
from choreo.service import Saga, Service
from choreo.transports.base import Producer, Transport

__all__ = ["Publisher", "SagaStarter"]

logger = logging.getLogger(__name__)


class Publisher:
    """Opens sagas on behalf of ``service``: start events go through the outbox, then Kafka.

    ``config`` supplies topic naming, tracing and the flush timeout (a
    :class:`~choreo.runtime.config.WorkerConfig`); ``inbox`` is the store whose outbox is
    used (share the service's :class:`~choreo.runtime.inbox.SqliteInbox` to make the
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
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._pending: list[OutboxRecord] = []
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
        local transaction that stores the event. Raises
        :class:`~choreo.errors.ConfigurationError` if the service does not declare that
        it starts ``saga`` or ``event`` is not the saga's start event.
        """
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
            traceparent=new_traceparent() if self.config.tracing else None,
        )
        record = OutboxRecord(
            envelope.event_id,
            self.config.topic_naming(event_type),
            envelope.correlation_id.encode(),
            self.serde.encode(event),
            envelope.to_headers(),
        )
        with self._lock:
            self._check_open()
            self._load_leftovers()
            inbox = self.inbox
            inbox.begin()
            try:
                if db_work is not None:
                    db_work(inbox.connection)
                inbox.enqueue(self.origin, [record])
            except BaseException:
                inbox.rollback()
                raise
            inbox.commit()
            self._pending.append(record)
            self._deliver()
        logger.info(
            "[%s %s cid=%s] started saga %s",
            self.service.name,
            event_type,
            envelope.correlation_id,
            saga.name,
        )
        return envelope.correlation_id

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
                if self._pending:
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

    def _deliver(self) -> None:
        """Publish and flush the pending records, then delete them from the outbox.

        A delivery failure is raised when the outbox is not durable; with a durable one
        the records stay stored and the failure is only logged.
        """
        assert self._producer is not None
        pending = self._pending
        if not pending:
            return
        try:
            for r in pending:
                self._producer.publish(r.topic, r.value, key=r.key, headers=r.headers)
            self._producer.flush(self.config.flush_timeout)
        except TransportError as exc:
            if not self.inbox.durable:
                raise
            logger.warning(
                "[%s] %d start event(s) kept in the outbox for later: %s",
                self.service.name,
                len(pending),
                exc,
            )
            return
        self._pending = []
        inbox = self.inbox
        inbox.begin()
        try:
            inbox.mark_sent([r.id for r in pending])
        except BaseException:
            inbox.rollback()
            raise
        inbox.commit()


SagaStarter = Publisher
"""Another name for :class:`Publisher`, for code that reads better with it."""
