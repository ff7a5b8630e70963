"""The tracker folds orchestrated sagas like choreographed ones, saga-guarantee checks included."""

from __future__ import annotations

import itertools
from pathlib import Path

from orch_kit import MakeKit, track
from orch_participants import Script, submitted

from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.model.envelope import Role
from choreo.tracker.fold import COMPENSATION_FAILED_EVENT_TYPE, Code, fold
from choreo.tracker.model import SagaState, SagaStatus, TraceEvent
from choreo.tracker.timeouts import TimeoutService
from choreo.transports.memory import MemoryTransport
from choreo.viewer.api import saga_detail, saga_row
from services.saga import OrderFulfillmentOrchestrated

_ids = itertools.count(1)


class Log:
    """A hand-written orchestrated saga: each event caused by the one named."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self.by_name: dict[str, str] = {}

    def add(
        self, name: str, role: Role, *, cause: str | None, step: str, etype: str | None = None
    ) -> None:
        eid = f"e{next(_ids):04d}"
        self.by_name[name] = eid
        self.events.append(
            TraceEvent(
                event_id=eid,
                event_type=etype or f"shop.{name}",
                role=role,
                service=step.split(".", maxsplit=1)[0],
                produced_at_ms=1_000 + len(self.events),
                causation_id=self.by_name.get(cause) if cause else None,
                step=step,
            )
        )

    def fold(self) -> object:
        return fold("o-1", self.events, saga="OrderFulfillmentOrchestrated")


def _forward(log: Log) -> None:
    log.add("OrderSubmitted", Role.START, cause=None, step="order.start")
    log.add("ReserveInventory", Role.COMMAND, cause="OrderSubmitted", step="orchestrator.reserve")
    log.add("Reserved", Role.STEP, cause="ReserveInventory", step="inventory.reserve_command")
    log.add("PrepareShipment", Role.COMMAND, cause="Reserved", step="orchestrator.prepare")
    log.add("Prepared", Role.STEP, cause="PrepareShipment", step="shipping.prepare_command")


def test_commands_move_the_saga_to_pending_and_replies_complete_it() -> None:
    """command -> Pending; the orchestrator's completed event ends it with no violation."""
    log = Log()
    log.add("OrderSubmitted", Role.START, cause=None, step="order.start")
    assert log.fold().state is SagaState.STARTED  # type: ignore[attr-defined]
    log.add("ReserveInventory", Role.COMMAND, cause="OrderSubmitted", step="orchestrator.reserve")
    assert log.fold().state is SagaState.PENDING  # type: ignore[attr-defined]
    log.add("Reserved", Role.STEP, cause="ReserveInventory", step="inventory.reserve_command")
    log.add("OrderCompleted", Role.COMPLETED, cause="Reserved", step="orchestrator.x")
    trace = log.fold()
    assert trace.status is SagaStatus.COMPLETED and not trace.violations  # type: ignore[attr-defined]


def test_a_compensate_command_moves_the_saga_to_compensating() -> None:
    """The orchestrator's compensate command is the start of compensation."""
    log = Log()
    _forward(log)
    log.add("DispatchFailed", Role.FAILURE, cause="Prepared", step="shipping.dispatch_command")
    log.add("CancelShipment", Role.COMPENSATE, cause="DispatchFailed", step="orchestrator.prepare")
    assert log.fold().state is SagaState.COMPENSATING  # type: ignore[attr-defined]


def test_a_command_after_compensation_began_violates_the_guarantee() -> None:
    """An orchestrator that sends a forward command once compensating is caught."""
    log = Log()
    _forward(log)
    log.add("CancelShipment", Role.COMPENSATE, cause="Prepared", step="orchestrator.prepare")
    log.add("DispatchShipment", Role.COMMAND, cause="CancelShipment", step="orchestrator.dispatch")
    codes = [v.code for v in log.fold().violations]  # type: ignore[attr-defined]
    assert Code.STEP_AFTER_COMPENSATION in codes


def test_compensations_in_forward_order_violate_the_guarantee() -> None:
    """Undoing reserve before prepare (which ran after it) is a compensation-order violation."""
    log = Log()
    _forward(log)
    log.add("Failed", Role.FAILURE, cause="Prepared", step="shipping.dispatch_command")
    log.add("ReleaseInventory", Role.COMPENSATE, cause="Failed", step="orchestrator.reserve")
    log.add(
        "Released", Role.COMPENSATION, cause="ReleaseInventory", step="inventory.reserve_command"
    )
    log.add("CancelShipment", Role.COMPENSATE, cause="Released", step="orchestrator.prepare")
    log.add("Cancelled", Role.COMPENSATION, cause="CancelShipment", step="shipping.prepare_command")
    codes = [v.code for v in log.fold().violations]  # type: ignore[attr-defined]
    assert codes == [Code.COMPENSATION_ORDER]


def test_a_compensation_of_a_step_never_run_is_a_violation_without_a_timeout() -> None:
    """Without a timeout the orchestrator must only undo steps that replied success."""
    log = Log()
    _forward(log)
    log.add("Failed", Role.FAILURE, cause="Prepared", step="shipping.dispatch_command")
    log.add("Refunded", Role.COMPENSATION, cause="Failed", step="payment.charge_command")
    codes = [v.code for v in log.fold().violations]  # type: ignore[attr-defined]
    assert codes == [Code.COMPENSATION_WITHOUT_STEP]


def test_after_a_timeout_the_timed_out_step_may_be_undone() -> None:
    """The timed-out step's outcome is unknown: undoing it is no violation."""
    log = Log()
    _forward(log)
    log.add("DispatchShipment", Role.COMMAND, cause="Prepared", step="orchestrator.dispatch")
    log.add(
        "Timeout",
        Role.FAILURE,
        cause="DispatchShipment",
        step="orchestrator.deadline",
        etype="choreo.SagaTimedOut",
    )
    log.add("Undone", Role.COMPENSATION, cause="Timeout", step="shipping.dispatch_command")
    trace = log.fold()
    assert not trace.violations and trace.timed_out  # type: ignore[attr-defined]


def test_the_orchestrator_giving_up_shows_compensation_failed() -> None:
    """choreo.SagaCompensationFailed ends the saga; the status asks for a human."""
    log = Log()
    _forward(log)
    log.add("Failed", Role.FAILURE, cause="Prepared", step="shipping.dispatch_command")
    log.add("CancelShipment", Role.COMPENSATE, cause="Failed", step="orchestrator.prepare")
    log.add(
        "GaveUp",
        Role.FAILED,
        cause="CancelShipment",
        step="orchestrator.deadline",
        etype=COMPENSATION_FAILED_EVENT_TYPE,
    )
    trace = log.fold()
    assert trace.state is SagaState.FAILED  # type: ignore[attr-defined]
    assert trace.compensation_failed  # type: ignore[attr-defined]
    assert trace.status is SagaStatus.COMPENSATION_FAILED  # type: ignore[attr-defined]


def test_the_tracker_views_a_kit_run_and_never_times_out_an_orchestrated_saga(
    make_kit: MakeKit, tmp_path: Path
) -> None:
    """Viewer rows and details show the roles; the TimeoutService leaves the saga alone."""
    kit, orch, _ = make_kit(Script(silent={"prepare"}))
    order = kit.workers["order"].service
    cid = kit.when(
        OrderFulfillmentOrchestrated, submitted("o-9"), correlation_id="o-9", service=order
    )
    tracker = track(kit, orch)
    trace = tracker.get(cid)
    assert trace is not None and trace.status is SagaStatus.PENDING
    detail = saga_detail(trace)
    roles = [event["role"] for event in detail["events"]]
    assert roles[:3] == ["start", "command", "command"]
    assert saga_row(trace)["saga"] == "OrderFulfillmentOrchestrated"
    service = TimeoutService(
        tracker, MemoryTransport(), SingleObjectCodec(load_directory(tmp_path)).encode
    )
    assert service.run_once(now=trace.started_at_ms + 3_600_000) == []  # type: ignore[operator]
    assert tracker.facts is not None
    assert tracker.facts.orchestrated == {"OrderFulfillmentOrchestrated"}
