"""Tests of the choreography graph: building it, its nodes, edges, roles and paths."""

from __future__ import annotations

import pytest
from fixtures.choreographies import chained
from fixtures.choreographies.valid_order import events as ev
from fixtures.choreographies.valid_order.sagas import fulfilment

from choreo.choreography.discovery import discover
from choreo.choreography.graph import (
    SAGA_TIMED_OUT,
    Choreography,
    Edge,
    EdgeKind,
    Lane,
    Node,
    NodeKind,
)
from choreo.choreography.service import Saga, Service, StepKind
from choreo.errors import ChoreographyError
from choreo.model.envelope import Role

NS = "test.shop."


@pytest.fixture(scope="module")
def shop() -> Choreography:
    """Return the valid order-fulfilment choreography."""
    return discover("fixtures.choreographies.valid_order").choreography()


def triples(edges: tuple[Edge, ...]) -> set[tuple[str, str, str]]:
    """Return edges as (source name, kind, target name) triples."""
    return {(e.source.name, e.kind.value, e.target.name) for e in edges}


def test_from_services_collects_services_handlers_and_sagas(shop: Choreography) -> None:
    """The graph holds every service, every handler and the sagas the services join."""
    assert [s.name for s in shop.services] == [
        "inventory",
        "notification",
        "order",
        "payment",
        "shipping",
    ]
    assert shop.sagas == (fulfilment,)
    assert len(shop.handlers) == 10
    assert shop.handler("payment.refund") is not None
    assert shop.handler("payment.nothing") is None
    assert shop.service("order") is not None
    assert shop.saga("OrderFulfillment") is fulfilment
    assert len(shop.event_types) == 14
    assert shop.event_class(NS + "OrderCreated") is ev.OrderCreated
    assert shop.event_class("test.shop.Nope") is None


def test_explicit_sagas_are_added() -> None:
    """A saga no service joins is still part of the graph when passed explicitly."""
    lonely = Saga(
        "Lonely", start=ev.OrderCreated, completed=ev.OrderCompleted, failed=ev.OrderFailed
    )
    graph = Choreography.from_services([], sagas=[lonely])
    assert graph.sagas == (lonely,)
    assert graph.event_types == (NS + "OrderCreated", NS + "OrderCompleted", NS + "OrderFailed")


def test_duplicate_service_names_are_refused() -> None:
    """Two different services with one name cannot be told apart in the graph."""
    with pytest.raises(ChoreographyError, match="two services are named shop"):
        Choreography.from_services([Service("shop"), Service("shop")])


def test_the_same_service_twice_counts_once() -> None:
    """Passing one Service object twice is harmless."""
    shop = Service("shop")
    assert Choreography.from_services([shop, shop]).services == (shop,)


def test_conflicting_sagas_are_refused() -> None:
    """Two different sagas sharing a name make the choreography ambiguous."""
    other = Saga(
        "OrderFulfillment",
        start=ev.PaymentCharged,
        completed=ev.OrderCompleted,
        failed=ev.OrderFailed,
    )
    with pytest.raises(ChoreographyError, match="two different sagas are named OrderFulfillment"):
        Choreography.from_services([Service("a", sagas=[fulfilment]), Service("b", sagas=[other])])


def test_non_services_are_refused() -> None:
    """Only Service and Saga objects can build a graph."""
    with pytest.raises(ChoreographyError, match="not a Service"):
        Choreography.from_services(["order"])  # type: ignore[list-item]
    with pytest.raises(ChoreographyError, match="not a Saga"):
        Choreography.from_services([], sagas=["OrderFulfillment"])  # type: ignore[list-item]


def test_edges_of_a_step(shop: Choreography) -> None:
    """A step consumes its event, emits its success and fails with its failure event."""
    edges = triples(shop.edges)
    assert (NS + "OrderCreated", "consumes", "inventory.reserve") in edges
    assert ("inventory.reserve", "emits", NS + "InventoryReserved") in edges
    assert ("inventory.reserve", "fails_with", NS + "InventoryReservationFailed") in edges
    assert ("order.start", "starts", NS + "OrderCreated") in edges


def test_compensation_links_to_the_step_it_undoes(shop: Choreography) -> None:
    """Each compensation has an ``undoes`` edge to its step (or to the saga start)."""
    undoes = {(e.source.name, e.target.name) for e in shop.edges if e.kind is EdgeKind.UNDOES}
    assert undoes == {
        ("inventory.release", "inventory.reserve"),
        ("payment.refund", "payment.charge"),
        ("shipping.cancel", "shipping.create"),
        ("order.fail_order", "order.start"),
    }
    start = next(
        e.target
        for e in shop.edges
        if e.source.name == "order.fail_order" and e.kind is EdgeKind.UNDOES
    )
    assert start == Node(NodeKind.START, "order.start")


def test_forward_and_compensation_edges_are_apart(shop: Choreography) -> None:
    """Forward edges touch only forward steps; compensation edges only compensations."""
    forward_kinds = {StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE}
    for edge in shop.forward_edges():
        for node in (edge.source, edge.target):
            if node.kind is NodeKind.HANDLER:
                spec = shop.handler(node.name)
                assert spec is not None and spec.kind in forward_kinds, edge
    for edge in shop.compensation_edges():
        spec = shop.handler(edge.source.name) or shop.handler(edge.target.name)
        assert spec is not None and spec.kind is StepKind.COMPENSATION, edge
    failures = {e for e in shop.forward_edges() if e.lane is Lane.FAILURE}
    assert triples(tuple(failures)) == {
        ("inventory.reserve", "fails_with", NS + "InventoryReservationFailed"),
        ("payment.charge", "fails_with", NS + "PaymentDeclined"),
        ("shipping.dispatch", "fails_with", NS + "ShipmentDispatchFailed"),
    }
    notices = shop.edges_in(Lane.NOTICE)
    assert triples(notices) == {
        (NS + "OrderCompleted", "consumes", "notification.notify"),
        (NS + "OrderFailed", "consumes", "notification.notify"),
        ("notification.notify", "emits", NS + "NotificationSent"),
    }
    lanes = len(shop.forward_edges()) + len(shop.compensation_edges()) + len(notices)
    assert lanes == len(shop.edges)


def test_nodes_cover_every_edge_end(shop: Choreography) -> None:
    """Every edge starts and ends at a node of the graph, and nodes are unique."""
    nodes = shop.nodes
    assert len(nodes) == len(set(nodes)) == 1 + 10 + 14
    for edge in shop.edges:
        assert edge.source in nodes and edge.target in nodes


def test_producers_and_consumers(shop: Choreography) -> None:
    """Producers emit an event (success or failure); consumers react to it."""
    assert [s.step_id for s in shop.producers(NS + "InventoryReleased")] == ["inventory.release"]
    assert [s.step_id for s in shop.consumers(NS + "InventoryReleased")] == ["order.fail_order"]
    assert [s.step_id for s in shop.producers(NS + "PaymentDeclined")] == ["payment.charge"]
    assert [s.step_id for s in shop.consumers(NS + "OrderCompleted")] == ["notification.notify"]
    assert shop.producers(NS + "OrderCreated") == ()
    assert [s.name for s in shop.starters("OrderFulfillment")] == ["order"]


def test_roles_of_every_event(shop: Choreography) -> None:
    """Saga declarations decide start/completed/failed; the emitting handler the rest."""
    expected = {
        "OrderCreated": Role.START,
        "OrderCompleted": Role.COMPLETED,
        "OrderFailed": Role.FAILED,
        "InventoryReserved": Role.STEP,
        "PaymentCharged": Role.STEP,
        "ShipmentCreated": Role.STEP,
        "ShipmentDispatched": Role.STEP,
        "InventoryReservationFailed": Role.FAILURE,
        "PaymentDeclined": Role.FAILURE,
        "ShipmentDispatchFailed": Role.FAILURE,
        "InventoryReleased": Role.COMPENSATION,
        "PaymentRefunded": Role.COMPENSATION,
        "ShipmentCancelled": Role.COMPENSATION,
        "NotificationSent": Role.NOTICE,
    }
    assert shop.roles() == {NS + name: role for name, role in expected.items()}
    assert shop.roles("OrderFulfillment") == shop.roles()
    assert shop.roles("NoSuchSaga") == {}


def test_happy_path_orders_the_forward_steps(shop: Choreography) -> None:
    """The happy path lists forward steps from the start to the completed event."""
    path = [spec.step_id for spec in shop.happy_path("OrderFulfillment")]
    assert path == [
        "inventory.reserve",
        "payment.charge",
        "shipping.create",
        "shipping.dispatch",
        "order.complete",
    ]
    assert shop.happy_path("NoSuchSaga") == ()


def test_compensations_of_each_step(shop: Choreography) -> None:
    """Each compensatable step and the saga start has exactly its compensation."""
    assert [c.step_id for c in shop.compensations_of("inventory.reserve")] == ["inventory.release"]
    assert [c.step_id for c in shop.compensations_of("order.start")] == ["order.fail_order"]
    assert shop.compensations_of("shipping.dispatch") == ()
    assert shop.is_start_step("order.start")
    assert not shop.is_start_step("inventory.start")
    assert shop.is_terminal(NS + "OrderFailed")
    assert not shop.is_terminal(NS + "OrderCreated")


def test_saga_events_reach_notices_but_not_other_sagas() -> None:
    """A saga's events stop at another saga's start event, which belongs to both."""
    graph = discover("fixtures.choreographies.chained").choreography()
    assert graph.saga_events("Ordering") == {
        "test.chained.Ordered",
        "test.chained.Confirmed",
        "test.chained.OrderingFailed",
        SAGA_TIMED_OUT,
    }
    assert graph.saga_events("Billing") == {
        "test.chained.Confirmed",
        "test.chained.Billed",
        "test.chained.BillingFailed",
    }
    assert [s.name for s in graph.sagas_of("test.chained.Confirmed")] == ["Ordering", "Billing"]
    assert graph.roles("Ordering")["test.chained.Confirmed"] is Role.COMPLETED
    assert graph.roles("Billing")["test.chained.Confirmed"] is Role.START
    assert [s.step_id for s in graph.happy_path("Ordering")] == ["orders.confirm"]
    assert [s.step_id for s in graph.happy_path("Billing")] == ["bills.bill"]


def test_saga_timed_out_is_a_failure() -> None:
    """The tracker's timeout event is a failure in the saga whose compensation consumes it."""
    graph = Choreography.from_services([chained.orders, chained.bills])
    assert graph.role_in(SAGA_TIMED_OUT) is Role.FAILURE
    assert graph.roles("Ordering")[SAGA_TIMED_OUT] is Role.FAILURE
    assert SAGA_TIMED_OUT not in graph.saga_events("Billing")


def test_repr_names_services_and_sagas(shop: Choreography) -> None:
    """The repr is short and names services and sagas."""
    text = repr(shop)
    assert "OrderFulfillment" in text and "inventory" in text and "handlers=10" in text
