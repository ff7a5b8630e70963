"""Testing helpers users import: the saga test kit and the transport contract suite.

Test a choreography without a broker: several services on one in-memory bus, in lockstep.

:class:`SagaTestKit` runs a real :class:`~choreo.runtime.worker.Worker` per service on a
shared :class:`~choreo.transports.memory.MemoryBus`, synchronously and deterministically:
:meth:`~SagaTestKit.run_until_idle` polls the workers round-robin until none has anything
left to handle. Every published record is recorded in publication order, so a saga's
events can be read back with their envelopes and asserted on::

    from choreo.testing import SagaTestKit

    from shop.events import OrderCreated, PaymentCharged
    from shop.services import fulfilment, inventory, orders, payment


    def test_an_order_is_fulfilled() -> None:
        with SagaTestKit([orders, inventory, payment], schemas_dir="schemas") as kit:
            cid = kit.start(fulfilment, OrderCreated(order_id="o-1", total_cents=1200))
            kit.run_until_idle()

            kit.assert_completed(cid)
            charged = kit.assert_emitted(cid, PaymentCharged)
            assert charged[0].envelope.step == "payment.charge"
            assert kit.dead_letters() == []

The kit retries failing handlers without waiting (its default budgets have no backoff;
a handler's own ``retry=`` still applies) and uses a memory inbox per service. Pass
``config=`` for other worker settings, ``serde=`` to bring your own serde, or
``transport=`` to run the same test over another transport; on a real broker records
arrive asynchronously, so drive it with :meth:`~SagaTestKit.run_until` instead of
:meth:`~SagaTestKit.run_until_idle` (and give each run its own ``group_prefix`` and
topic naming so runs sharing a broker do not meet).

:mod:`choreo.testing.transport_contract` is the contract every transport honours, and
:mod:`choreo.testing.store_contract` the one every store honours, as pytest test classes
to subclass with a fixture giving your transport or store (they import pytest; this
package does not).
"""

from choreo.testing.kit import SagaTestKit
from choreo.testing.records import PublishedRecord, SagaEvent

__all__ = ["PublishedRecord", "SagaEvent", "SagaTestKit"]
