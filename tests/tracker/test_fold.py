"""The pure fold: states, causal order, and every saga-guarantee violation, explained."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tracker_log import T0, SagaLog, build_choreography

from choreo.model.envelope import Envelope, Role
from choreo.tracker.fold import TIMEOUT_EVENT_TYPE, Code, causal_order, dedupe, fold
from choreo.tracker.graphfacts import facts_from
from choreo.tracker.model import SagaState, SagaStatus, TraceEvent


def events_of(envelopes: list[Envelope], *, topic: str = "t", offset: int = 0) -> list[TraceEvent]:
    """Return the trace events of envelopes as the tracker would read them."""
    return [
        TraceEvent(
            event_id=env.event_id,
            event_type=env.event_type,
            role=env.role,
            service=env.service,
            produced_at_ms=env.produced_at_ms,
            causation_id=env.causation_id,
            step=env.step,
            topic=topic,
            partition=0,
            offset=offset + index,
        )
        for index, env in enumerate(envelopes)
    ]


def fold_log(log: SagaLog, **kwargs: object) -> object:
    """Fold a whole SagaLog."""
    return fold(log.cid, events_of(log.envelopes), saga=log.saga, **kwargs)  # type: ignore[arg-type]


def codes(trace: object) -> list[str]:
    """Return the violation codes of a trace."""
    return [v.code for v in trace.violations]  # type: ignore[attr-defined]


# --- states ------------------------------------------------------------------------


def test_start_only_is_started() -> None:
    """A saga with only its start event is Started."""
    log = SagaLog()
    log.start()
    trace = fold_log(log)
    assert trace.state is SagaState.STARTED
    assert trace.status is SagaStatus.STARTED


def test_a_step_makes_it_pending() -> None:
    """A forward step after the start makes the saga Pending."""
    log = SagaLog()
    s = log.start()
    log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    assert fold_log(log).state is SagaState.PENDING


def test_failure_and_compensations_are_compensating() -> None:
    """A failure, then compensations, keep the saga Compensating until it fails."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    d = log.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    assert fold_log(log).state is SagaState.COMPENSATING
    log.emit(d, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve")
    assert fold_log(log).state is SagaState.COMPENSATING


def test_completed_run() -> None:
    """A full successful run is Completed with no violation, events in causal order."""
    log = SagaLog().completed()
    trace = fold_log(log)
    assert trace.state is SagaState.COMPLETED
    assert trace.violations == []
    assert [e.event_id for e in trace.events] == [e.event_id for e in log.envelopes]
    assert trace.duration_ms == log.envelopes[-1].produced_at_ms - log.envelopes[0].produced_at_ms
    assert trace.deadline_ms is None


def test_declined_run_is_failed() -> None:
    """A declined payment, compensated, then failed, is Failed with no violation."""
    trace = fold_log(SagaLog().declined(), facts=facts_from(build_choreography()))
    assert trace.state is SagaState.FAILED
    assert trace.violations == []


def test_notices_never_change_state() -> None:
    """Notices before and after the terminal event change neither state nor violations."""
    log = SagaLog().completed()
    done = log.envelopes[-1]
    log.emit(done, "trk.NotificationSent", Role.NOTICE, "notification", "notification.notify")
    log.emit(log.envelopes[0], "trk.Audit", Role.NOTICE, "audit", "audit.log")
    trace = fold_log(log)
    assert trace.state is SagaState.COMPLETED
    assert trace.violations == []
    assert len(trace.events) == 7


def test_step_header_of_start_may_be_absent() -> None:
    """A step event whose start was not read (unknown cause) is Pending, not a violation."""
    log = SagaLog()
    log.emit(None, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    trace = fold_log(log)
    assert trace.state is SagaState.PENDING
    assert trace.violations == []


# --- violations ------------------------------------------------------------------


def test_compensation_without_step() -> None:
    """A compensation naming a step that never ran is flagged with that step."""
    log = SagaLog()
    s = log.start()
    d = log.emit(s, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    bad = log.emit(
        d, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve"
    )
    trace = fold_log(log)
    assert codes(trace) == [Code.COMPENSATION_WITHOUT_STEP]
    assert trace.violations[0].event_id == bad.event_id
    assert "inventory.reserve" in trace.violations[0].message
    assert trace.status is SagaStatus.VIOLATED


def test_step_after_compensation() -> None:
    """A forward step caused (transitively) by a compensation is flagged."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    d = log.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    x = log.emit(d, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve")
    bad = log.emit(x, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
    trace = fold_log(log)
    assert codes(trace) == [Code.STEP_AFTER_COMPENSATION]
    assert trace.violations[0].event_id == bad.event_id
    assert trace.state is SagaState.COMPENSATING


def test_concurrent_step_after_failure_is_not_step_after_compensation() -> None:
    """A step concurrent with the failure (not caused by it) is not step-after-compensation."""
    log = SagaLog()
    s = log.start()
    log.emit(s, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    assert codes(fold_log(log)) == []


def test_completed_after_failure() -> None:
    """A completed event ordered after a failure is flagged."""
    log = SagaLog()
    s = log.start()
    d = log.emit(s, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    bad = log.emit(d, "trk.OrderCompleted", Role.COMPLETED, "order", "order.complete")
    trace = fold_log(log)
    assert codes(trace) == [Code.COMPLETED_AFTER_FAILURE]
    assert trace.violations[0].event_id == bad.event_id
    assert "trk.PaymentDeclined" in trace.violations[0].message


def test_compensation_order() -> None:
    """Undoing the earlier step before the later one (causally) is flagged."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    c = log.emit(r, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
    f = log.emit(c, "trk.ShippingFailed", Role.FAILURE, "shipping", "shipping.ship")
    x = log.emit(f, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve")
    bad = log.emit(x, "trk.PaymentRefunded", Role.COMPENSATION, "payment", "payment.charge")
    trace = fold_log(log)
    assert codes(trace) == [Code.COMPENSATION_ORDER]
    assert trace.violations[0].event_id == bad.event_id
    assert "reverse order" in trace.violations[0].message


def test_reverse_compensation_order_is_fine() -> None:
    """Undoing the later step first, then the earlier one, is the saga guarantee."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    c = log.emit(r, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
    f = log.emit(c, "trk.ShippingFailed", Role.FAILURE, "shipping", "shipping.ship")
    x = log.emit(f, "trk.PaymentRefunded", Role.COMPENSATION, "payment", "payment.charge")
    y = log.emit(x, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve")
    log.emit(y, "trk.OrderFailed", Role.FAILED, "order", "order.start")
    trace = fold_log(log, facts=facts_from(build_choreography()))
    assert trace.state is SagaState.FAILED
    assert codes(trace) == []


def test_double_terminal() -> None:
    """A second terminal event is flagged once (not also as an event after the terminal)."""
    log = SagaLog().completed()
    bad = log.emit(log.envelopes[-1], "trk.OrderCompleted", Role.COMPLETED, "order", "order.x")
    trace = fold_log(log)
    assert codes(trace) == [Code.DOUBLE_TERMINAL]
    assert trace.violations[0].event_id == bad.event_id
    assert trace.state is SagaState.COMPLETED


def test_event_after_terminal() -> None:
    """A step after the terminal event is flagged; a notice after it is not."""
    log = SagaLog().completed()
    done = log.envelopes[-1]
    log.emit(done, "trk.NotificationSent", Role.NOTICE, "notification")
    bad = log.emit(done, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
    trace = fold_log(log)
    assert codes(trace) == [Code.EVENT_AFTER_TERMINAL]
    assert trace.violations[0].event_id == bad.event_id


def test_compensation_missing_needs_the_graph() -> None:
    """A failed saga with an uncompensated compensatable step is flagged only with the graph."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    d = log.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    log.emit(d, "trk.OrderFailed", Role.FAILED, "order", "order.start")
    without = fold_log(log)
    assert without.state is SagaState.FAILED
    assert codes(without) == []
    with_graph = fold_log(log, facts=facts_from(build_choreography()))
    assert codes(with_graph) == [Code.COMPENSATION_MISSING]
    assert "inventory.reserve" in with_graph.violations[0].message


def test_unknown_cause_is_not_a_violation() -> None:
    """Events whose causes are not in the log fold cleanly."""
    log = SagaLog()
    log.emit(None, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
    log.emit(None, "trk.OrderCompleted", Role.COMPLETED, "order", "order.complete")
    trace = fold_log(log)
    assert trace.state is SagaState.COMPLETED
    assert codes(trace) == []


# --- timeouts, late events, deadlines -------------------------------------------------


def test_late_step_after_timeout_is_marked_late_not_violation() -> None:
    """A step that arrives after the saga timed out and failed is late, not a violation."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    t = log.emit(r, TIMEOUT_EVENT_TYPE, Role.FAILURE, "choreo-tracker", "payment.charge")
    x = log.emit(t, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve")
    log.emit(x, "trk.OrderFailed", Role.FAILED, "order", "order.start")
    late = log.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    trace = fold_log(log, facts=facts_from(build_choreography()))
    assert trace.timed_out
    assert trace.state is SagaState.FAILED
    assert codes(trace) == []
    marked = {e.event_id: e.late for e in trace.events}
    assert marked[late.event_id] is True
    assert sum(marked.values()) == 1


def test_late_compensatable_step_must_still_be_compensated() -> None:
    """A late compensatable step left uncompensated in a failed saga is a violation."""
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    t = log.emit(r, TIMEOUT_EVENT_TYPE, Role.FAILURE, "choreo-tracker", "payment.charge")
    x = log.emit(t, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve")
    log.emit(x, "trk.OrderFailed", Role.FAILED, "order", "order.start")
    log.emit(r, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
    trace = fold_log(log, facts=facts_from(build_choreography()))
    assert codes(trace) == [Code.COMPENSATION_MISSING]
    assert "payment.charge" in trace.violations[0].message


def test_deadline_from_graph_step_then_saga_then_default() -> None:
    """The next event is due after the reacting step's deadline, else the saga's, else default."""
    facts = facts_from(build_choreography(payment_deadline=5.0))
    log = SagaLog()
    s = log.start()
    started = fold_log(log, facts=facts, default_deadline_ms=1_000)
    assert started.deadline_ms == s.produced_at_ms + 60_000  # saga deadline
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    pending = fold_log(log, facts=facts, default_deadline_ms=1_000)
    assert pending.deadline_ms == r.produced_at_ms + 5_000  # payment.charge's own deadline
    plain = fold_log(log, default_deadline_ms=1_000)
    assert plain.deadline_ms == r.produced_at_ms + 1_000


def test_stuck_when_now_is_past_the_deadline() -> None:
    """A running saga is stuck when now is past its deadline; a finished one never is."""
    log = SagaLog()
    log.start()
    due = fold_log(log, default_deadline_ms=1_000).deadline_ms
    assert fold_log(log, default_deadline_ms=1_000, now_ms=due + 1).stuck
    assert not fold_log(log, default_deadline_ms=1_000, now_ms=due).stuck
    done = SagaLog().completed()
    assert not fold_log(done, default_deadline_ms=1, now_ms=T0 * 2).stuck


def test_compensation_failed_flag_sets_status() -> None:
    """compensation_failed shows as CompensationFailed (below violations in precedence)."""
    trace = fold_log(SagaLog().declined(), compensation_failed=True)
    assert trace.status is SagaStatus.COMPENSATION_FAILED


# --- ordering and the set property ----------------------------------------------------


def test_causal_order_beats_clock_order() -> None:
    """An event produced 'earlier' by a skewed clock still comes after its cause."""
    log = SagaLog()
    s = log.start(at=T0 + 100)
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve", at=T0)
    ordered = causal_order(dedupe(events_of(log.envelopes)))
    assert [e.event_id for e in ordered] == [s.event_id, r.event_id]


def test_duplicate_keeps_one_copy() -> None:
    """The same event id read twice (two offsets) counts once, the first copy kept."""
    log = SagaLog().completed()
    events = events_of(log.envelopes)
    copy = events_of(log.envelopes[2:3], topic="t", offset=99)
    trace = fold(log.cid, events + copy, saga=log.saga)
    assert len(trace.events) == len(events)
    assert trace.events[2].offset == 2


def _random_history(rng: random.Random, size: int) -> list[TraceEvent]:
    """Return a random event history: any roles, causes, clocks, steps and duplicates."""
    roles = list(Role)
    steps = ["a.s", "b.s", "c.s", None]
    events: list[TraceEvent] = []
    for index in range(size):
        cause: str | None = None
        if events and rng.random() < 0.8:
            cause = rng.choice(events).event_id
        elif rng.random() < 0.3:
            cause = f"unknown-{index}"
        event_type = TIMEOUT_EVENT_TYPE if rng.random() < 0.05 else f"T{rng.randint(0, 5)}"
        events.append(
            TraceEvent(
                event_id=f"e{index:03d}",
                event_type=event_type,
                role=rng.choice(roles),
                service=rng.choice(["a", "b"]),
                produced_at_ms=T0 + rng.randint(0, 5) * 10,  # clashes on purpose
                causation_id=cause,
                step=rng.choice(steps),
                topic=rng.choice(["x", "y"]),
                partition=rng.randint(0, 2),
                offset=index,
            )
        )
    return events


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 14), dup=st.integers(0, 5))
def test_fold_is_a_function_of_the_set(seed: int, size: int, dup: int) -> None:
    """Shuffling events and reading some twice (even from other offsets) folds the same."""
    rng = random.Random(seed)
    events = _random_history(rng, size)
    facts = facts_from(build_choreography())
    expected = fold("cid", events, saga="S", facts=facts)
    shuffled = list(events)
    rng.shuffle(shuffled)
    for _ in range(dup):
        original = rng.choice(events)
        shuffled.insert(
            rng.randrange(len(shuffled) + 1),
            TraceEvent(**{**_fields(original), "offset": original.offset + 1000}),
        )
    assert fold("cid", shuffled, saga="S", facts=facts) == expected
    assert len(expected.events) == size


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 14))
def test_causal_order_puts_every_known_cause_first(seed: int, size: int) -> None:
    """In the causal order every event comes after its cause when the cause is present."""
    events = _random_history(random.Random(seed), size)
    ordered = causal_order(dedupe(events))
    position = {e.event_id: i for i, e in enumerate(ordered)}
    assert sorted(position) == sorted(e.event_id for e in events)
    for event in ordered:
        if event.causation_id in position and event.causation_id != event.event_id:
            assert position[event.causation_id] < position[event.event_id]


def _fields(event: TraceEvent) -> dict[str, object]:
    return event._asdict()


def test_cycle_does_not_lose_events() -> None:
    """Corrupt causation cycles still keep every event (they go last)."""
    a = TraceEvent("a", "T", Role.STEP, "s", T0, causation_id="b")
    b = TraceEvent("b", "T", Role.STEP, "s", T0 + 1, causation_id="a")
    c = TraceEvent("c", "T", Role.START, "s", T0 + 5)
    ordered = causal_order(dedupe([a, b, c]))
    assert [e.event_id for e in ordered] == ["c", "a", "b"]


@pytest.mark.parametrize("role", [Role.COMPLETED, Role.FAILED])
def test_terminal_state_comes_from_the_first_terminal(role: Role) -> None:
    """The first terminal event decides the terminal state."""
    log = SagaLog()
    s = log.start()
    log.emit(s, "trk.End", role, "order", "order.end")
    expected = SagaState.COMPLETED if role is Role.COMPLETED else SagaState.FAILED
    assert fold_log(log).state is expected


def test_graph_facts_from_the_choreography() -> None:
    """The facts name compensatable steps, per-step deadlines and what may follow an event."""
    facts = facts_from(build_choreography(payment_deadline=5.0))
    assert {"inventory.reserve", "payment.charge", "order.start"} <= facts.compensatable
    assert "shipping.ship" not in facts.compensatable  # the pivot
    assert facts.expected_after("trk.InventoryReserved") == (
        "trk.PaymentCharged", "trk.PaymentDeclined",
    )
    assert facts.reacting_steps["trk.InventoryReserved"] == ("payment.charge",)
    assert facts.deadline_ms("trk.InventoryReserved", "OrderFulfillment", 1) == 5_000
    assert facts.deadline_ms("trk.Unknown", "OrderFulfillment", 1) == 60_000
    assert facts.deadline_ms("trk.Unknown", "Other", 1) == 1
