"""Testing helpers users import: the saga test kit and the transport contract suite.

Test a choreography (and orchestrators) without a broker: several services on one
in-memory bus, in lockstep, each on a store of production's kind, on virtual time.

:class:`SagaTestKit` runs a real :class:`~choreo.runtime.worker.Worker` per service on a
shared :class:`~choreo.transports.memory.MemoryBus`, synchronously and deterministically.
A test reads *given* a service's state (:meth:`~SagaTestKit.given`, in the service's
store: a SQLite database in memory unless ``stores=`` gives one, so handlers get
``ctx.db`` as under ``choreo run``), *when* a saga starts (:meth:`~SagaTestKit.when`:
start it and run until no worker has anything left), *expect* its events and the
tracker's verdict (:meth:`~SagaTestKit.expect`)::

    from choreo.testing import SagaTestKit

    from shop.events import InventoryReserved, OrderCompleted, OrderCreated, PaymentCharged
    from shop.services import fulfilment, inventory, orders, payment


    def test_an_order_is_fulfilled() -> None:
        with SagaTestKit([orders, inventory, payment], schemas_dir="schemas") as kit:
            kit.given(inventory, "INSERT INTO stock VALUES (?, ?)", ("book", 3))
            cid = kit.when(fulfilment, OrderCreated(order_id="o-1", sku="book"))
            kit.expect(cid, [OrderCreated, InventoryReserved, PaymentCharged,
                             OrderCompleted], status="Completed")
            assert kit.query(inventory, "SELECT qty FROM stock") == [(2,)]

Time is virtual (:mod:`choreo.testing.clock`): :meth:`~SagaTestKit.advance` lets deadlines
pass, so stuck sagas, the tracker's timeouts (``timeouts=True``) and orchestrators' step
deadlines are tested without waiting. Every published record is kept in publication
order (:attr:`~SagaTestKit.published`, each a :class:`~choreo.transports.base.Record`),
and feeds the kit's :class:`~choreo.tracker.Tracker` (:meth:`~SagaTestKit.tracker`,
:meth:`~SagaTestKit.trace`, :meth:`~SagaTestKit.verify`).

The kit retries failing handlers without waiting (its default budgets have no backoff;
a handler's own ``retry=`` still applies). Pass ``config=`` for other worker settings,
``serde=`` to bring your own serde, or ``transport=`` to run the same test over another
transport; on a real broker records arrive asynchronously, so drive it with
:meth:`~SagaTestKit.run_until` instead of :meth:`~SagaTestKit.run_until_idle` (and give
each run its own ``group_prefix`` and topic naming so runs sharing a broker do not meet).

:mod:`choreo.testing.transport_contract` is the contract every transport honours, and
:mod:`choreo.testing.store_contract` the one every store honours, as pytest test classes
to subclass with a fixture giving your transport or store (they import pytest; this
package does not).
"""

from choreo.testing.kit import SagaTestKit
from choreo.testing.records import PublishedRecord, SagaEvent

__all__ = ["PublishedRecord", "SagaEvent", "SagaTestKit"]
