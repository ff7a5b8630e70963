"""Tests of choreo.choreography.discovery: finding services and sagas by importing a target."""

from __future__ import annotations

import pytest
from fixtures.choreographies import targets
from fixtures.choreographies.valid_order.sagas import fulfilment

from choreo.choreography.discovery import discover, load_choreography
from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError


def test_a_package_is_searched_recursively() -> None:
    """Every module of a package is imported and its services and sagas collected once."""
    found = discover("fixtures.choreographies.valid_order")
    assert [s.name for s in found.services] == [
        "inventory",
        "notification",
        "order",
        "payment",
        "shipping",
    ]
    assert found.sagas == (fulfilment,)
    assert len(found.choreography().handlers) == 10


def test_a_module_yields_its_own_attributes() -> None:
    """A module target yields the services and sagas bound in that module (imports too)."""
    found = discover("fixtures.choreographies.valid_order.order")
    assert [s.name for s in found.services] == ["order"]
    assert found.sagas == (fulfilment,)


def test_a_service_attribute() -> None:
    """``module:attribute`` naming a Service yields just that service."""
    found = discover("fixtures.choreographies.valid_order.inventory:inventory")
    assert [s.name for s in found.services] == ["inventory"]
    assert found.sagas == ()


def test_a_list_attribute() -> None:
    """A list or tuple of services and sagas is taken as is."""
    found = discover("fixtures.choreographies.targets:WITH_SAGA")
    assert [s.name for s in found.services] == ["inventory"]
    assert found.sagas == (fulfilment,)
    assert len(discover("fixtures.choreographies.targets:SERVICES").services) == 5


def test_a_choreography_attribute_is_used_as_is() -> None:
    """load_choreography returns a Choreography attribute itself."""
    assert load_choreography("fixtures.choreographies.targets:CHOREOGRAPHY") is targets.CHOREOGRAPHY
    found = discover("fixtures.choreographies.targets:CHOREOGRAPHY")
    assert found.services == targets.CHOREOGRAPHY.services


def test_load_choreography_of_a_package() -> None:
    """load_choreography builds the graph of what a package holds."""
    graph = load_choreography("fixtures.choreographies.valid_order")
    assert graph.saga("OrderFulfillment") is fulfilment
    assert isinstance(graph.services[0], Service)
    assert isinstance(graph.sagas[0], Saga)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("fixtures.choreographies.no_such_module", "cannot import fixtures.choreographies.no_such"),
        ("fixtures.choreographies.targets:MISSING", "has no attribute 'MISSING'"),
        ("fixtures.choreographies.targets:NOT_A_SERVICE", "is a int, not a Service"),
        ("fixtures.choreographies.valid_order.events", "no Service or Saga found"),
        (":attribute", "names no module"),
    ],
)
def test_bad_targets(target: str, message: str) -> None:
    """A target that cannot give services is a ConfigurationError saying why."""
    with pytest.raises(ConfigurationError, match=message):
        discover(target)
