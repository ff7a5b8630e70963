"""The orchestrated order saga end to end on the memory bus: success, failures, compensations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from orch_kit import MakeKit, track
from orch_participants import Script, submitted

from choreo.model.envelope import Role
from choreo.model.events import Event, SagaTimedOut, event_type_of
from choreo.orchestration import Phase, SagaCompensationFailed
from choreo.testing import SagaTestKit
from choreo.tracker.model import SagaStatus
from services import events as ev
from services.saga import OrderFulfillmentOrchestrated


def _start(kit: SagaTestKit, order_id: str = "o-1") -> str:
    order = kit.workers["order"].service
    return kit.when(
        OrderFulfillmentOrchestrated, submitted(order_id), correlation_id=order_id, service=order
    )


def test_a_saga_whose_steps_succeed_completes_each_step_once(make_kit: MakeKit) -> None:
    """Commands in declared order (reserve and charge at once), replies, then OrderCompleted."""
    kit, orch, script = make_kit()
    cid = _start(kit)
    kit.expect(
        cid,
        [
            ev.OrderSubmitted,
            ev.ReserveInventory,
            ev.ChargePayment,
            ev.ReserveInventorySucceeded,
            ev.ChargePaymentSucceeded,
            ev.PrepareShipment,
            ev.PrepareShipmentSucceeded,
            ev.DispatchShipment,
            ev.DispatchShipmentSucceeded,
            ev.CompleteOrder,
            ev.CompleteOrderSucceeded,
            ev.OrderCompleted,
        ],
    )
    assert kit.phase(orch, cid) is Phase.COMPLETED
    assert script.calls == {n: 1 for n in ("reserve", "charge", "prepare", "dispatch", "complete")}
    roles = [e.role for e in kit.events(cid)]
    assert roles.count(Role.COMMAND) == 5 and roles[-1] is Role.COMPLETED
    steps = [e.envelope.step for e in kit.events(cid) if e.role is Role.COMMAND]
    assert steps == [
        f"orchestrator.{n}" for n in ("reserve", "charge", "prepare", "dispatch", "complete")
    ]
    trace = track(kit, orch).get(cid)
    assert trace is not None and trace.status is SagaStatus.COMPLETED, trace


@pytest.mark.parametrize(
    ("failing", "failure", "undone"),
    [
        ("reserve", ev.ReserveInventoryFailed, ["refund", "reject"]),
        ("charge", ev.ChargePaymentFailed, ["release", "reject"]),
        ("dispatch", ev.DispatchShipmentFailed, ["cancel", "refund", "release", "reject"]),
    ],
)
def test_a_failing_step_undoes_the_completed_steps_in_reverse_order(
    make_kit: MakeKit, failing: str, failure: type, undone: list[str]
) -> None:
    """The failed step is not undone; the others are, last completed first, then OrderFailed."""
    kit, orch, script = make_kit(Script(fail={failing}))
    cid = _start(kit)
    events = kit.events(cid)
    assert event_type_of(failure) in [e.event_type for e in events]
    commands = {
        ev.ReleaseInventory.__avro_name__: "release",
        ev.RefundPayment.__avro_name__: "refund",
        ev.CancelShipment.__avro_name__: "cancel",
        ev.RejectOrder.__avro_name__: "reject",
    }
    sent = [commands[e.event_type] for e in events if e.role is Role.COMPENSATE]
    assert sent == undone
    replies = [e.envelope.step for e in events if e.role is Role.COMPENSATION]
    assert len(replies) == len(undone)
    assert events[-1].event_type == ev.OrderFailed.__avro_name__
    assert kit.phase(orch, cid) is Phase.FAILED
    assert all(script.calls[name] == 1 for name in undone)
    assert sum(script.calls.values()) == len(undone) + len(
        [e for e in events if e.role is Role.COMMAND]
    )
    trace = track(kit, orch).get(cid)
    assert trace is not None
    assert trace.status is SagaStatus.FAILED, trace.violations


def test_compensations_wait_for_a_parallel_step_still_in_flight(make_kit: MakeKit) -> None:
    """Reserve fails while charge has not replied: nothing is undone before charge ends."""
    kit, orch, _ = make_kit(Script(fail={"reserve"}, silent={"charge"}))
    cid = _start(kit)
    assert kit.phase(orch, cid) is Phase.COMPENSATING
    assert not [e for e in kit.events(cid) if e.role is Role.COMPENSATE]
    kit.advance(6)  # charge times out: its outcome is unknown, so it is undone too
    events = kit.events(cid)
    types = [e.event_type for e in events if e.role in (Role.COMPENSATE, Role.FAILURE)]
    assert types == [
        ev.ReserveInventoryFailed.__avro_name__,
        "choreo.SagaTimedOut",
        ev.RefundPayment.__avro_name__,
        ev.RejectOrder.__avro_name__,
    ]
    assert kit.phase(orch, cid) is Phase.FAILED


def test_the_deadline_passes_only_on_the_virtual_clock(make_kit: MakeKit) -> None:
    """A silent step stays pending until the kit's clock passes its deadline."""
    kit, orch, _ = make_kit(Script(silent={"prepare"}))
    cid = _start(kit)
    kit.advance(4.9)
    assert kit.phase(orch, cid) is Phase.RUNNING
    kit.advance(0.2)
    assert kit.phase(orch, cid) is Phase.FAILED


def test_a_step_that_misses_its_deadline_times_out_and_is_compensated(make_kit: MakeKit) -> None:
    """SagaTimedOut names the step; the timed-out step is undone first (it may have run)."""
    kit, orch, script = make_kit(Script(silent={"prepare"}))
    cid = _start(kit)
    kit.advance(5)
    kit.expect(
        cid,
        [
            ev.OrderSubmitted,
            ev.ReserveInventory,
            ev.ChargePayment,
            ev.ReserveInventorySucceeded,
            ev.ChargePaymentSucceeded,
            ev.PrepareShipment,
            SagaTimedOut,
            ev.CancelShipment,
            ev.CancelShipmentSucceeded,
            ev.RefundPayment,
            ev.RefundPaymentSucceeded,
            ev.ReleaseInventory,
            ev.ReleaseInventorySucceeded,
            ev.RejectOrder,
            ev.RejectOrderSucceeded,
            ev.OrderFailed,
        ],
    )
    (timeout,) = kit.assert_emitted(cid, SagaTimedOut, times=1)
    assert isinstance(timeout.event, SagaTimedOut) and timeout.role is Role.FAILURE
    assert timeout.event.step == "orchestrator.prepare"
    assert "choreo.DeadlinePassed" in kit.event_types(cid)  # the notice that triggered it
    assert script.calls["dispatch"] == 0
    trace = track(kit, orch).get(cid)
    assert trace is not None and trace.status is SagaStatus.FAILED and trace.timed_out


def _late_reply(
    kit: SagaTestKit, cid: str, command: type[Event], reply: Event, step: str
) -> None:
    """Publish ``reply`` as the participant would have, caused by the saga's ``command``."""
    sent = kit.assert_emitted(cid, command)[0]
    event_type = event_type_of(reply)
    envelope = sent.envelope.caused(
        event_type, role=Role.STEP, service=step.split(".", maxsplit=1)[0], step=step
    )
    envelope = replace(envelope, produced_at_ms=kit.clock_ms())  # the kit's time is virtual
    kit.publish_raw(
        event_type, kit.serde.encode(reply), key=cid.encode(), headers=envelope.to_headers()
    )
    kit.run_until_idle()


def test_a_late_reply_is_recorded_and_never_resumes_the_saga(make_kit: MakeKit) -> None:
    """PrepareShipmentSucceeded after the timeout: no DispatchShipment, the saga stays failed."""
    kit, orch, _ = make_kit(Script(silent={"prepare"}))
    cid = _start(kit)
    kit.advance(5)
    before = len(kit.events(cid))
    late = ev.PrepareShipmentSucceeded(order_id=cid, shipment_id="s")
    _late_reply(kit, cid, ev.PrepareShipment, late, "shipping.prepare")
    assert len(kit.events(cid)) == before + 1  # the reply itself, nothing after it
    kit.assert_not_emitted(cid, ev.DispatchShipment)
    assert kit.phase(orch, cid) is Phase.FAILED
    with orch.engine.lock:
        assert len(orch.engine.runs[cid].steps["prepare"].late) == 1
    trace = track(kit, orch).get(cid)
    assert trace is not None
    assert trace.status is SagaStatus.FAILED, trace.violations
    assert [e.late for e in trace.events if e.event_type == late.__avro_name__] == [True]


def test_a_late_reply_while_compensating_changes_nothing(make_kit: MakeKit) -> None:
    """The late reply comes while refund is still awaited: compensation goes on as planned."""
    kit, orch, _ = make_kit(Script(silent={"prepare", "refund"}))
    cid = _start(kit)
    kit.advance(5)  # prepare times out; cancel done, refund sent and silent
    assert kit.phase(orch, cid) is Phase.COMPENSATING
    late = ev.PrepareShipmentSucceeded(order_id=cid, shipment_id="s")
    _late_reply(kit, cid, ev.PrepareShipment, late, "shipping.prepare")
    kit.assert_not_emitted(cid, ev.DispatchShipment)
    assert kit.phase(orch, cid) is Phase.COMPENSATING


def test_a_compensation_that_keeps_failing_ends_compensation_failed(make_kit: MakeKit) -> None:
    """Refund raises every time: re-sent at each deadline, then SagaCompensationFailed."""
    kit, orch, script = make_kit(Script(fail={"dispatch"}, broken={"refund"}), attempts=3)
    cid = _start(kit)
    for _ in range(3):
        kit.advance(5)
    assert kit.phase(orch, cid) is Phase.COMPENSATION_FAILED
    assert len(kit.assert_emitted(cid, ev.RefundPayment)) == 3
    (gave_up,) = kit.assert_emitted(cid, SagaCompensationFailed, times=1)
    assert gave_up.role is Role.FAILED and isinstance(gave_up.event, SagaCompensationFailed)
    assert gave_up.event.step == "orchestrator.charge" and gave_up.event.attempts == 3
    assert gave_up.event.pending == ["charge", "reserve", "start"]
    kit.assert_not_emitted(cid, ev.ReleaseInventory)  # the chain stops for a human
    assert script.calls["cancel"] == 1
    assert len(kit.dead_letters(cid)) == 3  # each refund attempt asked for a human
    trace = track(kit, orch).get(cid)
    assert trace is not None and trace.status is SagaStatus.COMPENSATION_FAILED


def test_a_retriable_step_is_sent_again_until_it_succeeds(make_kit: MakeKit) -> None:
    """CompleteOrder gets no reply: re-sent at its deadline; the saga completes, never fails."""
    script = Script(silent={"complete"})
    kit, orch, _ = make_kit(script)
    cid = _start(kit)
    kit.advance(5)
    assert len(kit.assert_emitted(cid, ev.CompleteOrder)) == 2
    kit.assert_not_emitted(cid, SagaTimedOut)
    script.silent.clear()
    kit.advance(5)
    assert kit.phase(orch, cid) is Phase.COMPLETED
    commands = kit.assert_emitted(cid, ev.CompleteOrder)
    assert len(commands) == 3 and len({c.envelope.event_id for c in commands}) == 3
    assert script.calls["complete"] == 1


def test_many_sagas_run_independently(make_kit: MakeKit) -> None:
    """Twenty sagas at once, every one ends, each step ran once per order."""
    kit, orch, script = make_kit()
    cids = [_start(kit, f"o-{n}") for n in range(20)]
    assert {kit.phase(orch, cid) for cid in cids} == {Phase.COMPLETED}
    assert script.calls["dispatch"] == 20


def test_parallel_compensations_are_sent_at_once_and_the_start_last() -> None:
    """CompensationOrder.PARALLEL: cancel, refund and release together, then reject."""
    from orch_participants import SCHEMAS_DIR, build

    from choreo.orchestration import CompensationOrder, CompensationPolicy
    from services import orchestrated

    script = Script(fail={"dispatch"})
    orch = orchestrated.create(
        deadline=5.0, compensation=CompensationPolicy(order=CompensationOrder.PARALLEL)
    )
    with SagaTestKit([orch, *build(script)], schemas_dir=SCHEMAS_DIR) as kit:
        cid = _start(kit)
        events = kit.events(cid)
        compensate = [i for i, e in enumerate(events) if e.role is Role.COMPENSATE]
        sent = [events[i].event_type for i in compensate]
        assert sent[:3] == [
            event_type_of(ev.CancelShipment),
            event_type_of(ev.RefundPayment),
            event_type_of(ev.ReleaseInventory),
        ]
        assert compensate[:3] == [compensate[0], compensate[0] + 1, compensate[0] + 2]
        assert sent[3] == event_type_of(ev.RejectOrder)
        replies = [i for i, e in enumerate(events) if e.role is Role.COMPENSATION]
        assert compensate[3] > max(replies[:3])  # the start is undone after the others
        assert kit.phase(orch, cid) is Phase.FAILED
