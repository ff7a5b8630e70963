"""choreo check validates orchestrated sagas; graph and AsyncAPI draw them."""

from __future__ import annotations

import pytest
from orch_participants import SCHEMAS_DIR

from choreo.choreography.asyncapi import to_asyncapi
from choreo.choreography.checks import ProblemCode, Severity, check
from choreo.choreography.drawing import to_dot, to_mermaid
from choreo.choreography.graph import Choreography
from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError
from choreo.orchestration import Orchestrator, SagaRun
from services import events as ev
from services import orchestrated
from services.shop import build_shop


def test_the_example_with_both_styles_has_no_problem() -> None:
    """The shop's services and the orchestrator check clean, errors and warnings alike."""
    shop = build_shop()
    choreography = Choreography.from_services([*shop.services, orchestrated.create().service])
    assert check(choreography, SCHEMAS_DIR) == []


Saga_ = Saga("Toy", start=ev.OrderSubmitted, completed=[ev.OrderCompleted], failed=[ev.OrderFailed])


def _toy(*, compensate: bool = True) -> Orchestrator:
    orch = Orchestrator("toy", saga=Saga_)

    @orch.step(
        sends=ev.ReserveInventory,
        success=ev.ReserveInventorySucceeded,
        failure=ev.ReserveInventoryFailed,
    )
    def reserve(run: SagaRun) -> ev.ReserveInventory:
        return ev.ReserveInventory(order_id=run.correlation_id, items=[])

    if compensate:

        @orch.compensation(
            undoes=reserve, sends=ev.ReleaseInventory, success=ev.ReleaseInventorySucceeded
        )
        def release(run: SagaRun) -> ev.ReleaseInventory:
            return ev.ReleaseInventory(order_id=run.correlation_id)

    @orch.completed
    def done(run: SagaRun) -> ev.OrderCompleted:
        return ev.OrderCompleted(order_id=run.correlation_id)

    @orch.failed
    def undone(run: SagaRun) -> ev.OrderFailed:
        return ev.OrderFailed(order_id=run.correlation_id, reason="")

    return orch


def _codes(*services: Service) -> dict[ProblemCode, Severity]:
    return {p.code: p.severity for p in check(Choreography.from_services(services))}


def test_missing_compensation_and_participant_are_errors() -> None:
    """A compensatable step without compensation; a command nobody handles."""
    codes = _codes(_toy(compensate=False).service)
    assert codes[ProblemCode.STEP_NOT_COMPENSATED] is Severity.ERROR
    assert codes[ProblemCode.COMMAND_WITHOUT_PARTICIPANT] is Severity.ERROR


def test_a_reply_the_step_does_not_declare_is_an_error() -> None:
    """The participant answers with an event the orchestrator would never hear."""
    inventory = Service("inventory")

    @inventory.pivot(on=ev.ReserveInventory, emits=ev.InventoryReserved)
    def reserve(event: ev.ReserveInventory) -> None: ...

    @inventory.compensation(
        undoes="inventory.other", on=ev.ReleaseInventory, emits=ev.ReleaseInventorySucceeded
    )
    def release(event: ev.ReleaseInventory) -> None: ...

    codes = _codes(_toy().service, inventory)
    assert codes[ProblemCode.REPLY_NOT_HANDLED] is Severity.ERROR
    assert codes[ProblemCode.REPLY_NEVER_SENT] is Severity.WARNING
    assert codes[ProblemCode.PARTICIPANT_KIND] is Severity.WARNING
    assert ProblemCode.COMMAND_WITHOUT_PARTICIPANT not in codes


def test_declarations_that_cannot_run_are_refused() -> None:
    """Two pivots, a step after the pivot that is not retriable, a reply used twice."""
    orch = Orchestrator("bad", saga=Saga_)
    orch.step(sends=ev.ReserveInventory, success=ev.ReserveInventorySucceeded)(lambda run: None)
    with pytest.raises(ConfigurationError, match="named function"):
        orch.step(sends=ev.ChargePayment, success=ev.ReserveInventorySucceeded)(object())

    def charge(run: SagaRun) -> None: ...

    orch.step(sends=ev.ChargePayment, success=ev.ReserveInventorySucceeded)(charge)
    with pytest.raises(ConfigurationError, match="declare @completed"):
        orch.service  # noqa: B018
    orch.completed(lambda run: None)
    orch.failed(lambda run: None)
    with pytest.raises(ConfigurationError, match="belongs to one step"):
        orch.service  # noqa: B018


def test_the_graph_draws_the_orchestrator_and_its_commands() -> None:
    """Mermaid and DOT show the orchestrator's handlers; AsyncAPI pins the command roles."""
    shop = build_shop()
    choreography = Choreography.from_services([*shop.services, orchestrated.create().service])
    mermaid = to_mermaid(choreography)
    assert '[["begin (orchestrator)"]]' in mermaid
    assert '(["ReserveInventory"])' in mermaid and "role_unknown" not in mermaid
    assert "box3d" in to_dot(choreography)
    roles = choreography.roles("OrderFulfillmentOrchestrated")
    assert roles["shop.inventory.ReserveInventory"].value == "command"
    assert roles["shop.inventory.ReleaseInventory"].value == "compensate"
    assert roles["shop.inventory.ReserveInventorySucceeded"].value == "step"
    assert roles["shop.shipping.DispatchShipmentFailed"].value == "failure"
    document = to_asyncapi(choreography)
    assert "orchestrator" in str(document)
