"""No saga database: a new orchestrator rebuilds every saga from the log and sends nothing twice."""

from __future__ import annotations

from orch_kit import DEADLINE, MakeKit
from orch_participants import Script, submitted

from choreo.model.envelope import Role
from choreo.orchestration import Outcome, Phase
from choreo.orchestration.rebuild import rebuild
from choreo.runtime.routing import derived_event_id, read_envelope
from choreo.testing import SagaTestKit
from services import events as ev
from services import orchestrated
from services.saga import OrderFulfillmentOrchestrated


def _start(kit: SagaTestKit, order_id: str) -> str:
    order = kit.workers["order"].service
    return kit.when(
        OrderFulfillmentOrchestrated, submitted(order_id), correlation_id=order_id, service=order
    )


def test_a_new_orchestrator_rebuilds_every_saga_from_the_topics(make_kit: MakeKit) -> None:
    """Ended and in-flight sagas come back with the same phase and the same commands sent."""
    kit, orch, _ = make_kit(Script(silent={"prepare"}))
    done = [_start(kit, f"o-{n}") for n in range(3)]
    kit.advance(DEADLINE)  # these three time out on prepare and fail
    waiting = _start(kit, "o-waiting")  # prepare sent, no reply yet
    fresh = orchestrated.create(deadline=DEADLINE)
    folded = rebuild(
        fresh, kit.transport, kit.serde, topic_naming=kit.config.topic_naming, idle_timeout=0.2
    )
    assert folded > 0
    for cid in [*done, waiting]:
        old, new = orch.engine.runs[cid], fresh.engine.runs[cid]
        assert new.phase is old.phase
        assert new.steps.keys() == old.steps.keys()
        for name, state in old.steps.items():
            assert set(new.steps[name].commands) == set(state.commands), name
            assert set(new.steps[name].undo_commands) == set(state.undo_commands), name
    assert fresh.engine.runs[waiting].outcome("prepare") is Outcome.SENT
    assert {fresh.engine.runs[cid].phase for cid in done} == {Phase.FAILED}


def test_a_redelivered_reply_after_a_rebuild_sends_nothing_new(make_kit: MakeKit) -> None:
    """Handling the log's replies again (as after a crash) decides nothing already sent."""
    kit, _, _ = make_kit()
    cid = _start(kit, "o-1")
    fresh = orchestrated.create(deadline=DEADLINE)
    rebuild(fresh, kit.transport, kit.serde, topic_naming=kit.config.topic_naming, idle_timeout=0.2)
    service = fresh.service
    outputs = []
    for sent in kit.events(cid):
        spec = service.handler_for(sent.event_type)
        if spec is None:
            continue
        envelope = read_envelope(sent.record.header_map)
        ctx = _Ctx(envelope)
        outputs.extend(spec.invoke(sent.event, ctx))
    assert outputs == []
    assert fresh.engine.runs[cid].phase is Phase.COMPLETED


def test_an_event_handled_twice_gives_the_same_events(make_kit: MakeKit) -> None:
    """A batch the worker rewinds is handled again: the engine returns the same outputs."""
    kit, orch, _ = make_kit()
    start = submitted("o-2")
    cid = _start(kit, "o-2")
    first = kit.events(cid)[0]
    assert first.role is Role.START
    spec = orch.service.handler_for(first.event_type)
    assert spec is not None
    again = spec.invoke(start, _Ctx(first.envelope))
    assert [type(e) for e in again] == [ev.ReserveInventory, ev.ChargePayment]
    assert again == spec.invoke(start, _Ctx(first.envelope))


class _Ctx:
    """The little of a handler context the orchestrator's handlers read."""

    def __init__(self, envelope: object) -> None:
        import logging

        self.envelope = envelope
        self.log = logging.getLogger("test")


def test_a_reply_handled_before_a_kill_never_reuses_its_output_id(make_kit: MakeKit) -> None:
    """A redelivered reply whose output is in the log does not give a new event that old id.

    The failing scale-out run: the killed owner handled the next-to-last compensation reply
    and published its command, but its offset was not committed; the new owner rebuilt the
    run with the last compensation reply folded in, so handling the redelivered reply
    decided the failed event, under the id of the command already published: every inbox
    and the tracker dropped it as a duplicate and the saga stayed compensating.
    """
    kit, _, _ = make_kit(Script(fail={"dispatch"}))
    cid = _start(kit, "o-kill")
    sent = kit.events(cid)
    ended = [s for s in sent if s.role is Role.FAILED]
    assert len(ended) == 1
    log_ids = {s.envelope.event_id for s in sent} - {ended[0].envelope.event_id}
    undone = [s for s in sent if s.role is Role.COMPENSATION]
    assert len(undone) >= 2
    # the log as the new owner reads it: everything but the failed event
    fresh = orchestrated.create(deadline=DEADLINE)
    engine = fresh.engine
    run = engine.run_for(cid)
    for s in sent:
        if s is not ended[0]:
            engine.observe(run, read_envelope(s.record.header_map), s.event)
    outputs: list[tuple[str, object]] = []
    for s in undone[-2:]:  # both last replies redelivered, as after the kill
        spec = fresh.service.handler_for(s.event_type)
        assert spec is not None
        envelope = read_envelope(s.record.header_map)
        step_id = fresh.step_id(spec.name)
        for index, event in enumerate(spec.invoke(s.event, _Ctx(envelope))):
            outputs.append((derived_event_id(envelope.event_id, step_id, index), event))
    assert [type(event) for _, event in outputs] == [type(ended[0].event)]
    assert outputs[0][0] not in log_ids  # else dropped as a copy of an event it is not
