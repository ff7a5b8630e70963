"""A participant refuses a command that reaches it after it ran the saga's compensation.

Commands and compensation commands travel on different topics, so a command the
orchestrator sent before a step timed out can reach its participant after the
compensation. The participant must never apply it: the handler is not called, no reply
is sent, a warning is logged, and the command goes to the dead-letter topic with reason
``refused-after-compensation`` (no human needed), where the tracker shows it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from orch_kit import MakeKit
from orch_participants import Script, submitted

from choreo.model.envelope import Role
from choreo.model.events import event_type_of
from choreo.orchestration import Phase
from choreo.runtime.deadletter import DeadLetterReason
from choreo.runtime.refusal import Refusals
from choreo.store import SqliteStore
from choreo.testing import SagaTestKit
from choreo.transports.base import Record
from services import events as ev
from services.saga import OrderFulfillmentOrchestrated


def _start(kit: SagaTestKit, order_id: str) -> str:
    order = kit.workers["order"].service
    return kit.when(
        OrderFulfillmentOrchestrated, submitted(order_id), correlation_id=order_id, service=order
    )


def _late_command(kit: SagaTestKit, cid: str, command: ev.ChargePayment) -> None:
    """Publish ``command`` as the orchestrator sent it, arriving after the compensation."""
    start = kit.events(cid)[0]
    envelope = start.envelope.caused(
        event_type_of(command),
        role=Role.COMMAND,
        service="orchestrator",
        step="orchestrator.charge",
    )
    kit.publish_raw(
        kit.config.topic_naming(envelope.event_type),
        kit.serde.encode(command),
        key=cid.encode(),
        headers=envelope.to_headers(),
    )
    kit.run_until_idle()


def test_a_command_after_the_compensation_is_refused_and_recorded(
    make_kit: MakeKit, caplog: pytest.LogCaptureFixture
) -> None:
    """Reserve fails, payment refunds; a ChargePayment arriving then is never applied."""
    kit, orch, script = make_kit(Script(fail={"reserve"}))
    cid = _start(kit, "o-late")
    assert kit.phase(orch, cid) is Phase.FAILED
    assert script.calls["charge"] == 1 and script.calls["refund"] == 1
    payment = kit.workers["payment"]
    assert payment.refusals is not None and payment.refusals.compensated(cid)
    before = len(kit.events(cid))

    with caplog.at_level(logging.WARNING):
        _late_command(kit, cid, ev.ChargePayment(order_id=cid, amount_cents=3000))

    assert script.calls["charge"] == 1  # never applied
    assert payment.refusals.refused == 1
    after = [e.event_type for e in kit.events(cid)[before:]]
    assert after == ["shop.payments.ChargePayment"]  # the late command itself; no reply
    assert any("late command refused" in r.getMessage() for r in caplog.records)
    trace = kit.tracker().get(cid)
    assert trace is not None
    notes = [n for n in trace.dead_letters if n.reason == DeadLetterReason.REFUSED.value]
    assert len(notes) == 1, trace.dead_letters
    assert notes[0].event_type == "shop.payments.ChargePayment"
    assert not notes[0].needs_human
    assert kit.phase(orch, cid) is Phase.FAILED  # the saga's outcome is unchanged


def test_another_sagas_commands_still_run(make_kit: MakeKit) -> None:
    """Only the compensated saga is refused: the next saga's commands run and it completes."""
    kit, orch, script = make_kit(Script(fail={"dispatch"}))
    failed = _start(kit, "o-failed")  # dispatch fails: prepare cancelled, payment refunded
    assert kit.phase(orch, failed) is Phase.FAILED
    payment = kit.workers["payment"].refusals
    assert payment is not None and payment.compensated(failed)
    script.fail.clear()
    ok = _start(kit, "o-ok")
    assert kit.phase(orch, ok) is Phase.COMPLETED
    assert script.calls["charge"] == 2 and script.calls["dispatch"] == 2
    assert not payment.compensated(ok)
    assert payment.refused == 0


def test_the_mark_is_in_the_store_and_survives_a_restart(tmp_path: Path) -> None:
    """A compensated saga stays refused by a new process on the same store."""
    path = tmp_path / "payment.sqlite3"
    store = SqliteStore(path)
    store.migrate("choreo", [])
    refusals = Refusals(store, "payment", lambda: 1)
    store.begin()
    refusals._mark("o-1")
    store.commit()
    store.close()
    reopened = SqliteStore(path)
    try:
        again = Refusals(reopened, "payment", lambda: 2)
        assert again.compensated("o-1")
        assert not again.compensated("o-2")
        assert not Refusals(reopened, "inventory", lambda: 2).compensated("o-1")
    finally:
        reopened.close()


def _publish(kit: SagaTestKit, cid: str, command: ev.ChargePayment, role: Role) -> None:
    """Publish ``command`` for saga ``cid`` with ``role`` (no run)."""
    start = kit.events(cid)[0]
    envelope = start.envelope.caused(
        event_type_of(command), role=role, service="orchestrator", step="orchestrator.charge"
    )
    kit.publish_raw(
        kit.config.topic_naming(envelope.event_type),
        kit.serde.encode(command),
        key=cid.encode(),
        headers=envelope.to_headers(),
    )


def test_the_guards_are_armed_only_for_batches_with_commands(make_kit: MakeKit) -> None:
    """A batch without commands runs the handlers themselves (the dispatcher's fast path);
    a late command in a later batch is still refused."""
    kit, orch, script = make_kit(Script(fail={"reserve"}))
    cid = _start(kit, "o-armed")
    assert kit.phase(orch, cid) is Phase.FAILED
    payment = kit.workers["payment"]
    refusals = payment.refusals
    assert refusals is not None and refusals.compensated(cid)
    route = payment.dispatcher.routes[event_type_of(ev.ChargePayment)]

    # the same type with a choreographed role: a batch without commands, no guard
    _publish(kit, cid, ev.ChargePayment(order_id=cid, amount_cents=1), Role.STEP)
    kit.run_until_idle()
    assert route.func is route.spec.func and not refusals.refused
    charged = script.calls["charge"]

    _publish(kit, cid, ev.ChargePayment(order_id=cid, amount_cents=2), Role.COMMAND)
    kit.run_until_idle()
    assert route.func is not route.spec.func and route.takes_context
    assert refusals.refused == 1 and script.calls["charge"] == charged  # never applied


def test_any_role_header_of_an_order_arms_the_guards(make_kit: MakeKit) -> None:
    """A record carrying a command role in any of its role headers arms the guards; one
    with list pairs (not hashable) arms them too."""
    kit, _, _ = make_kit(Script())
    refusals = kit.workers["payment"].refusals
    assert refusals is not None
    plain = (("choreo-role", b"step"), ("choreo-type", b"x"))
    doubled = (("choreo-role", b"step"), ("choreo-role", b"command"))
    compensate = (("choreo-role", b"compensate"),)
    odd = (["choreo-role", b"step"],)

    def record(headers: tuple[Any, ...]) -> Record:
        return Record("t", 0, 0, None, b"", headers)

    assert not refusals.arm([record(plain), record(plain)])
    assert refusals.arm([record(plain), record(doubled)])
    assert not refusals.arm([])
    assert refusals.arm([record(compensate)])
    assert refusals.arm([record(odd)])  # type: ignore[arg-type]
