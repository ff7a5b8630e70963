"""choreo: the saga's four services declared with choreo's decorators, run by its Worker.

The services are defined here, not taken from ``services/``: the example services keep
their state in SQLite stores and add failure injection, while the comparison needs the
same trivial logic as the other peers (one dict update per step, outcomes decided by
:mod:`bench.peers.choreography`). The handlers use the generated typed events
(``services/events.py``) and choreo's idioms: a step returns its success or its declared
failure event, compensations declare what they undo, ``dispatch`` is the pivot and
``complete`` is retriable.

Each service runs in a :class:`~choreo.runtime.Worker` (one consumer and one producer) in a
process of its own, with choreo's default :class:`~choreo.runtime.WorkerConfig` apart from
the group id and topic names. ``choreo-confluent`` and ``choreo-kafka-python`` use a
:class:`~choreo.runtime.MemoryInbox` (no durable store: the raw loop has none either);
``choreo-postgres`` uses the :class:`~choreo.store.PostgresStore` (inbox and outbox rows
committed in PostgreSQL per batch; the handlers run no SQL, their state is the same dict),
one schema per service on the run's PostgreSQL server. Payloads go through choreo's own
codec (:class:`~choreo.avro.codec.SingleObjectCodec` over ``schemas/``) and
:class:`~choreo.avro.serde.EventSerde`. The transport is confluent-kafka or kafka-python,
configured with the same producer settings as every peer (``acks=all``, idempotence,
``linger.ms=5``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bench.peers import choreography as ch
from bench.peers import clientstats
from bench.peers.harness import RunContext
from bench.peers.shape import CHOREOGRAPHED, SagaShape
from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.avro.serde import EventSerde
from choreo.choreography.service import Saga, Service
from choreo.model.events import Event
from choreo.runtime import MemoryInbox, Worker, WorkerConfig
from choreo.runtime.middleware import Middleware, default_middleware
from choreo.store import Store
from choreo.transports.base import Record
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport
from services.events import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    OrderCompleted,
    OrderCreated,
    OrderFailed,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDispatched,
    ShipmentDispatchFailed,
)

EVENT_CLASSES: tuple[type[Event], ...] = (
    OrderCreated,
    InventoryReserved,
    InventoryReservationFailed,
    PaymentCharged,
    PaymentDeclined,
    ShipmentCreated,
    ShipmentDispatched,
    ShipmentDispatchFailed,
    ShipmentCancelled,
    PaymentRefunded,
    InventoryReleased,
    OrderCompleted,
    OrderFailed,
)


def build_services(states: dict[str, dict[str, str]]) -> list[Service]:
    """Return the four services, their handlers writing to ``states[service]``."""
    saga = Saga(ch.SAGA, start=OrderCreated, completed=[OrderCompleted], failed=[OrderFailed])
    inventory = Service("inventory", sagas=[saga])
    payment = Service("payment", sagas=[saga])
    shipping = Service("shipping", sagas=[saga])
    order = Service("order", sagas=[saga])
    order.starts(saga)
    stock = states.setdefault("inventory", {})
    ledger = states.setdefault("payment", {})
    parcels = states.setdefault("shipping", {})
    orders = states.setdefault("order", {})

    @inventory.step(on=OrderCreated, emits=InventoryReserved, fails_with=InventoryReservationFailed)
    def reserve(event: OrderCreated) -> Event:
        order_id = event.order_id
        if ch.reservation_fails(order_id):
            stock[order_id] = "unavailable"
            return InventoryReservationFailed(order_id=order_id, reason="out of stock")
        stock[order_id] = "reserved"
        return InventoryReserved(
            order_id=order_id, reservation_id="r-" + order_id, items=event.items
        )

    @inventory.compensation(
        undoes=reserve, on=[PaymentDeclined, PaymentRefunded], emits=InventoryReleased
    )
    def release(event: PaymentDeclined | PaymentRefunded) -> InventoryReleased:
        stock[event.order_id] = "released"
        return InventoryReleased(order_id=event.order_id)

    @payment.step(on=InventoryReserved, emits=PaymentCharged, fails_with=PaymentDeclined)
    def charge(event: InventoryReserved) -> Event:
        order_id = event.order_id
        if ch.payment_declined(order_id):
            ledger[order_id] = "declined"
            return PaymentDeclined(order_id=order_id, reason="card declined")
        ledger[order_id] = "charged"
        amount = sum(i.quantity * i.unit_price_cents for i in event.items)
        return PaymentCharged(order_id=order_id, payment_id="p-" + order_id, amount_cents=amount)

    @payment.compensation(undoes=charge, on=ShipmentCancelled, emits=PaymentRefunded)
    def refund(event: ShipmentCancelled) -> PaymentRefunded:
        ledger[event.order_id] = "refunded"
        return PaymentRefunded(order_id=event.order_id)

    @shipping.step(on=PaymentCharged, emits=ShipmentCreated)
    def create_shipment(event: PaymentCharged) -> ShipmentCreated:
        parcels[event.order_id] = "created"
        return ShipmentCreated(order_id=event.order_id, shipment_id="s-" + event.order_id)

    @shipping.pivot(on=ShipmentCreated, emits=ShipmentDispatched, fails_with=ShipmentDispatchFailed)
    def dispatch(event: ShipmentCreated) -> Event:
        order_id = event.order_id
        if ch.dispatch_fails(order_id):
            parcels[order_id] = "undispatchable"
            return ShipmentDispatchFailed(order_id=order_id, reason="carrier unavailable")
        parcels[order_id] = "dispatched"
        return ShipmentDispatched(order_id=order_id, tracking_number="t-" + order_id)

    @shipping.compensation(
        undoes=create_shipment, on=ShipmentDispatchFailed, emits=ShipmentCancelled
    )
    def cancel(event: ShipmentDispatchFailed) -> ShipmentCancelled:
        parcels[event.order_id] = "cancelled"
        return ShipmentCancelled(order_id=event.order_id)

    @order.retriable(on=ShipmentDispatched, emits=OrderCompleted)
    def complete(event: ShipmentDispatched) -> OrderCompleted:
        orders[event.order_id] = "completed"
        return OrderCompleted(order_id=event.order_id)

    @order.compensation(
        undoes=saga, on=[InventoryReleased, InventoryReservationFailed], emits=OrderFailed
    )
    def reject(event: InventoryReleased | InventoryReservationFailed) -> OrderFailed:
        orders[event.order_id] = "failed"
        reason = getattr(event, "reason", None) or "compensated"
        return OrderFailed(order_id=event.order_id, reason=reason)

    return [inventory, payment, shipping, order]


def build_serde() -> EventSerde:
    """Return choreo's serde over the schemas in ``schemas/`` for the saga's event classes."""
    codec = SingleObjectCodec(load_directory(ch.REPO_ROOT / "schemas"))
    return EventSerde(codec, EVENT_CLASSES)


def worker_config(ctx: RunContext, service: str, **overrides: Any) -> WorkerConfig:
    """Return choreo's default WorkerConfig for ``service`` in this run (its group and topics)."""
    return WorkerConfig(
        group_id=ctx.group(service),
        topic_naming=ctx.topic,
        deadletter_naming=ctx.deadletter_topic,
        create_topics=False,
        topic_partitions=ctx.partitions,
        **overrides,
    )


def kafka_config(ctx: RunContext, *, stats: bool = True) -> KafkaConfig:
    """Return the transport's client configuration: the run's broker, every peer's producer.

    ``stats``: librdkafka statistics when ``--client-stats`` asked for them (confluent only).
    """
    return KafkaConfig(
        bootstrap_servers=ctx.bootstrap,
        producer=ctx.producer_settings(),
        common=clientstats.settings() if stats else {},
    )


class _BatchCounter(Middleware):
    """Counts the worker's polled batches for ``--client-stats`` (one flush each)."""

    def after_poll(self, worker: Worker, records: list[Record]) -> None:
        """Count a non-empty batch."""
        clientstats.count_batch(len(records))


def middleware() -> list[Middleware] | None:
    """Return the worker's middleware: choreo's default, plus a batch counter when asked."""
    if clientstats.recorder() is None:
        return None
    return [*default_middleware(), _BatchCounter()]


class WorkerThreads:
    """Runs loops (a Worker's or an OrchestratorRunner's ``run(stop)``), a thread each.

    :meth:`stop` sets the shared stop event and joins the threads; :meth:`failure` is the
    first exception a loop ended with.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def add(self, name: str, loop: Callable[[threading.Event], object]) -> None:
        """Prepare a thread named ``name`` that runs ``loop(stop)`` (see :meth:`start_all`)."""
        thread = threading.Thread(target=self._run, args=(loop,), name=name, daemon=True)
        self._threads.append(thread)

    def start_all(self) -> None:
        """Start every thread :meth:`add` prepared."""
        for thread in self._threads:
            thread.start()

    def _run(self, loop: Callable[[threading.Event], object]) -> None:
        try:
            loop(self._stop)
        except BaseException as exc:
            self._errors.append(exc)

    def submit(self, order_id: str, datum: dict[str, Any]) -> None:
        """Not used: start events come from the harness's injector."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every loop after its batch in hand and wait for it to close."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def failure(self) -> BaseException | None:
        """Return the first error that ended a loop, or None."""
        return self._errors[0] if self._errors else None


class ChoreoImplementation(WorkerThreads):
    """The services, each a choreo Worker (one per process when deployed), on one transport.

    ``store="postgres"`` gives each service a :class:`~choreo.store.PostgresStore` on the
    run's PostgreSQL server (a schema per service and run) instead of the memory inbox.
    """

    uses_kafka = True
    shape: SagaShape = CHOREOGRAPHED

    def __init__(
        self,
        transport: str,
        *,
        name: str | None = None,
        store: str = "memory",
        **overrides: Any,
    ) -> None:
        self.name = name or f"choreo-{transport}"
        self.overrides = overrides
        self.transport_kind = transport
        self.store_kind = store
        super().__init__()
        self._states: dict[str, dict[str, str]] = {}
        self._workers: list[Worker] = []
        self._stores: list[Store] = []

    def _store(self, ctx: RunContext, service: str) -> Store:
        """Return the store of ``service``: a memory inbox, or PostgreSQL."""
        if self.store_kind == "memory":
            return MemoryInbox()
        if not ctx.postgres_url:
            raise RuntimeError(f"{self.name} needs a PostgreSQL URL (--postgres-url)")
        from choreo.store.postgres import PostgresStore

        store = PostgresStore(ctx.postgres_url, schema=ctx.schema(service))
        self._stores.append(store)
        return store

    def start(self, ctx: RunContext, service: str | None = None) -> None:
        """Build the services and start a Worker thread for ``service`` (None: every one)."""
        serde = build_serde()
        config = kafka_config(ctx, stats=self.transport_kind == "confluent")
        for declared in build_services(self._states):
            if service is not None and declared.name != service:
                continue
            transport = open_transport(self.transport_kind, config=config)
            worker = Worker(
                declared,
                transport,
                serde,
                config=worker_config(ctx, declared.name, **self.overrides),
                inbox=self._store(ctx, declared.name),
                middleware=middleware(),
            )
            self._workers.append(worker)
            self.add(f"choreo-{declared.name}", worker.run)
        self.start_all()

    def stop(self) -> None:
        """Stop every worker after its batch in hand, wait for it to close, close the stores."""
        super().stop()
        for store in self._stores:
            store.close()

    def states(self) -> dict[str, dict[str, str]]:
        """Return each service's state dict."""
        return self._states

    def cleanup(self, ctx: RunContext) -> None:
        """Drop the run's PostgreSQL schemas (once every service process has stopped)."""
        if self.store_kind != "postgres" or not ctx.postgres_url:
            return
        import psycopg

        with psycopg.connect(ctx.postgres_url, autocommit=True) as conn:
            for service in self.shape.services:
                conn.execute(f'DROP SCHEMA IF EXISTS "{ctx.schema(service)}" CASCADE')


def create_confluent() -> ChoreoImplementation:
    """Return choreo on its confluent-kafka transport."""
    return ChoreoImplementation("confluent")


def create_postgres() -> ChoreoImplementation:
    """Return choreo on confluent-kafka with the PostgreSQL store (durable, shareable)."""
    return ChoreoImplementation("confluent", name="choreo-postgres", store="postgres")


def create_kafka_python() -> ChoreoImplementation:
    """Return choreo on its kafka-python transport."""
    return ChoreoImplementation("kafka-python")
