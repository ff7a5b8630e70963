"""Test orchestrated sagas like choreographed ones: :class:`~choreo.testing.SagaTestKit`.

The saga test kit takes :class:`~choreo.orchestration.Orchestrator` objects next to
services, runs each on a real worker, and drives their step deadlines with its virtual
clock (:meth:`~choreo.testing.SagaTestKit.advance`)::

    with SagaTestKit([orchestrator, order, inventory, payment], schemas_dir="schemas") as kit:
        cid = kit.when(OrderSaga, OrderSubmitted(...), service=order)   # start, run until idle
        kit.advance(30)                                                  # a step times out
        kit.expect(cid, [OrderSubmitted, ReserveInventory, ...], status="Failed")
        assert kit.phase(orchestrator, cid) is Phase.FAILED

:class:`OrchestrationTestKit` is the name this kit had when it only served orchestrators;
it is the same kit.
"""

from __future__ import annotations

from choreo.testing import SagaTestKit

__all__ = ["OrchestrationTestKit"]


class OrchestrationTestKit(SagaTestKit):
    """The :class:`~choreo.testing.SagaTestKit` under its former name (nothing added)."""
