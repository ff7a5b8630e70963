"""Tests of choreo.choreography.checks.check: one broken example choreography per problem."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from choreo.choreography.checks import Problem, ProblemCode, Severity, check, validate
from choreo.choreography.discovery import discover
from choreo.choreography.graph import SAGA_TIMED_OUT, Choreography
from choreo.choreography.service import Service
from choreo.errors import ChoreographyError
from choreo.model.events import Event

FIXTURES = "fixtures.choreographies."


def problems_of(module: str, schemas: object | None = None) -> list[Problem]:
    """Return the problems of the fixture choreography ``module``."""
    return check(discover(FIXTURES + module).choreography(), schemas)


def only(problems: list[Problem], code: ProblemCode) -> Problem:
    """Return the single problem of ``code``, failing if there is not exactly one."""
    found = [p for p in problems if p.code is code]
    assert len(found) == 1, problems
    return found[0]


def codes(problems: list[Problem]) -> set[str]:
    """Return the codes of ``problems``."""
    return {p.code.value for p in problems}


def test_valid_choreography_has_no_problem() -> None:
    """The order-fulfilment example is consistent."""
    assert problems_of("valid_order") == []


def test_missing_compensation() -> None:
    """A compensatable step without compensation names the step and the fix."""
    problems = problems_of("broken_missing_compensation")
    assert codes(problems) == {"missing-compensation"}
    problem = problems[0]
    assert (problem.service, problem.handler, problem.severity) == (
        "shop",
        "reserve",
        Severity.ERROR,
    )
    assert problem.message.startswith(
        "shop.reserve: compensatable step has no compensation "
        "(declare @shop.compensation(undoes=reserve, ...)"
    )


def test_start_not_compensated_is_a_warning() -> None:
    """A saga that can fail but whose start nobody undoes gets a warning, not an error."""
    problems = problems_of("broken_start_not_compensated")
    assert codes(problems) == {"start-not-compensated"}
    problem = problems[0]
    assert problem.severity is Severity.WARNING
    assert problem.service == "shop" and problem.handler is None
    assert problem.event == "test.start_not_compensated.Started"
    assert "saga Checkout" in problem.message and "@shop.compensation(undoes=" in problem.message
    assert validate(discover(FIXTURES + "broken_start_not_compensated").choreography()) == problems


def test_saga_that_cannot_fail_needs_no_start_compensation() -> None:
    """No step declares fails_with, so the uncompensated start is not reported."""
    assert "start-not-compensated" not in codes(problems_of("broken_start_not_consumed"))


def test_unknown_undone_step() -> None:
    """A compensation undoing a step that does not exist is reported on the compensation."""
    problems = problems_of("broken_unknown_undone_step")
    problem = only(problems, ProblemCode.UNKNOWN_UNDONE_STEP)
    assert (problem.service, problem.handler) == ("shop", "release")
    assert problem.message == (
        "shop.release: compensation undoes shop.reserv, which is not a step of shop"
    )
    # the typo also leaves the real step uncompensated
    assert only(problems, ProblemCode.MISSING_COMPENSATION).handler == "reserve"
    assert len(problems) == 2


def test_undoes_a_function_of_another_service_hints_at_it() -> None:
    """Undoing another service's function resolves to a missing local step, with a hint."""
    graph = discover(FIXTURES + "broken_missing_compensation").choreography()
    from fixtures.choreographies.broken_missing_compensation import Rejected, reserve

    audit = Service("audit")

    @audit.compensation(undoes=reserve, on=Rejected)
    def unreserve(event: Rejected) -> None:
        return None

    problems = check(Choreography.from_services([*graph.services, audit]))
    problem = only(problems, ProblemCode.UNKNOWN_UNDONE_STEP)
    assert problem.message.startswith("audit.unreserve: compensation undoes audit.reserve")
    assert "(shop.reserve is in another service)" in problem.message


def test_undoes_not_compensatable() -> None:
    """A compensation that undoes the pivot is reported; the real step stays uncompensated."""
    problems = problems_of("broken_undoes_not_compensatable")
    problem = only(problems, ProblemCode.UNDOES_NOT_COMPENSATABLE)
    assert (problem.service, problem.handler) == ("shop", "release")
    assert "undoes shop.approve, a pivot handler" in problem.message
    assert codes(problems) == {"undoes-not-compensatable", "missing-compensation"}


def test_undoes_other_service() -> None:
    """A compensation may only undo its own service's steps."""
    problems = problems_of("broken_undoes_other_service")
    assert codes(problems) == {"undoes-other-service"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("shop", "release")
    assert problem.message.startswith(
        "shop.release: compensation undoes stock.reserve, a step of service stock"
    )


def test_compensates_failed_step() -> None:
    """Undoing a step on its own failure event compensates something that never happened."""
    problems = problems_of("broken_compensates_failed_step")
    assert codes(problems) == {"compensates-failed-step"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("shop", "release")
    assert problem.event == "test.compensates_failed_step.ReserveFailed"


def test_dead_end_event() -> None:
    """An emitted event nobody consumes, not terminal and not a notice, is a dead end."""
    problems = problems_of("broken_dead_end_event")
    assert codes(problems) == {"dead-end-event"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("shop", "approve")
    assert problem.event == "test.dead_end_event.Audited"
    assert problem.message.startswith("shop.approve: emits test.dead_end_event.Audited")


def test_notices_and_terminal_events_are_no_dead_ends() -> None:
    """NotificationSent (a notice) and OrderCompleted/OrderFailed need no consumer."""
    graph = discover(FIXTURES + "valid_order").choreography()
    assert graph.consumers("test.shop.NotificationSent") == ()
    assert "dead-end-event" not in codes(check(graph))


def test_never_emitted() -> None:
    """A consumed event that nobody emits (and that starts no saga) is reported."""
    problems = problems_of("broken_never_emitted")
    assert codes(problems) == {"never-emitted"}
    problem = problems[0]
    assert (problem.service, problem.handler, problem.event) == (
        "shop",
        "haunt",
        "test.never_emitted.Ghost",
    )


def test_saga_timed_out_needs_no_producer() -> None:
    """choreo.SagaTimedOut is emitted by the tracker: consuming it is fine."""
    problems = problems_of("chained")
    assert problems == []
    graph = discover(FIXTURES + "chained").choreography()
    assert graph.producers(SAGA_TIMED_OUT) == ()


def test_unhandled_failure() -> None:
    """A failure event only a listener consumes leaves the saga hanging."""
    problems = problems_of("broken_unhandled_failure")
    problem = only(problems, ProblemCode.UNHANDLED_FAILURE)
    assert (problem.service, problem.handler) == ("shop", "approve")
    assert problem.event == "test.unhandled_failure.Rejected"
    assert "the saga would hang" in problem.message
    assert [p.severity for p in problems] == [Severity.ERROR, Severity.WARNING]


def test_no_failed_path() -> None:
    """A handled failure whose compensations never reach a failed event is reported."""
    problems = problems_of("broken_no_failed_path")
    assert codes(problems) == {"no-failed-path"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("shop", "approve")
    assert "test.no_failed_path.Failed" in problem.message


def test_start_not_consumed() -> None:
    """A saga whose start event no step consumes (a listener does not count)."""
    problems = problems_of("broken_start_not_consumed")
    assert codes(problems) == {"start-not-consumed"}
    problem = problems[0]
    assert problem.handler is None and problem.service is None
    assert problem.message == (
        "saga Checkout: its start event test.start_not_consumed.Started is consumed by no step"
    )


def test_no_completion_path() -> None:
    """A saga whose forward steps never emit its completed event."""
    problems = problems_of("broken_no_completion_path")
    assert codes(problems) == {"no-completion-path"}
    assert "test.no_completion_path.Done" in problems[0].message


def test_retriable_before_pivot() -> None:
    """A retriable step upstream of the pivot breaks Richardson's ordering."""
    problems = problems_of("broken_retriable_before_pivot")
    assert codes(problems) == {"retriable-before-pivot"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("shop", "prepare")
    assert "before the pivot shop.approve" in problem.message


def test_multiple_pivots() -> None:
    """A saga has one point of no return; the second pivot is reported."""
    problems = problems_of("broken_multiple_pivots")
    assert codes(problems) == {"multiple-pivots"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("shop", "ship")
    assert "(shop.approve, shop.ship)" in problem.message


def test_step_after_pivot() -> None:
    """A compensatable step after the pivot could never undo the pivot."""
    problems = problems_of("broken_step_after_pivot")
    assert codes(problems) == {"step-after-pivot"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("warehouse", "pack")
    assert "@warehouse.retriable" in problem.message


def test_saga_not_joined() -> None:
    """Emitting a saga's terminal event needs the service to join the saga."""
    problems = problems_of("broken_saga_not_joined")
    assert codes(problems) == {"saga-not-joined"}
    problem = problems[0]
    assert (problem.service, problem.handler) == ("finisher", "finish")
    assert problem.event == "test.saga_not_joined.Done"


# --- schemas -------------------------------------------------------------------------------


def shop_names() -> set[str]:
    """Return the full names of every event of the valid example."""
    return set(discover(FIXTURES + "valid_order").choreography().event_types)


def test_missing_schema_with_a_container_of_names() -> None:
    """Any container of full names tells which events have a schema."""
    names = shop_names() - {"test.shop.PaymentRefunded"}
    problems = problems_of("valid_order", schemas=names)
    assert codes(problems) == {"missing-schema"}
    problem = problems[0]
    assert problem.event == "test.shop.PaymentRefunded"
    assert (problem.service, problem.handler) == ("payment", "refund")
    assert "used by payment.refund, inventory.release" in problem.message
    assert problems_of("valid_order", schemas=shop_names()) == []


def test_missing_schema_with_a_registry_object() -> None:
    """An object with ``names()`` (a schema registry) is asked for its names."""

    class Registry:
        def names(self) -> tuple[str, ...]:
            return tuple(sorted(shop_names() - {"test.shop.OrderCreated"}))

    problems = problems_of("valid_order", schemas=Registry())
    assert [p.event for p in problems] == ["test.shop.OrderCreated"]


def test_builtin_events_need_no_schema_of_the_user() -> None:
    """choreo's own events (choreo.SagaTimedOut) are not the user's schemas to provide."""
    graph = discover(FIXTURES + "chained").choreography()
    names = set(graph.event_types) - {SAGA_TIMED_OUT}
    assert check(graph, names) == []


def test_schemas_of_an_unknown_shape_are_refused() -> None:
    """Something that can list no names is a TypeError, not a silent pass."""
    with pytest.raises(TypeError, match="schemas must be"):
        problems_of("valid_order", schemas=42)


def write_avsc(directory: Path, full_name: str) -> None:
    """Write a one-field record schema for ``full_name`` into ``directory``."""
    namespace, _, name = full_name.rpartition(".")
    schema = {
        "type": "record",
        "name": name,
        "namespace": namespace,
        "doc": f"The {name} event.",
        "fields": [{"name": "order_id", "type": "string", "doc": "The order."}],
    }
    (directory / f"{name}.avsc").write_text(json.dumps(schema))


def test_missing_schema_with_a_directory(tmp_path: Path) -> None:
    """A directory of .avsc files is loaded with choreo's schema loader."""
    pytest.importorskip("choreo.avro.loader")
    for full_name in shop_names() - {"test.shop.ShipmentCancelled"}:
        write_avsc(tmp_path, full_name)
    problems = problems_of("valid_order", schemas=tmp_path)
    assert [(p.code.value, p.event) for p in problems] == [
        ("missing-schema", "test.shop.ShipmentCancelled")
    ]


# --- reporting -------------------------------------------------------------------------------


def test_errors_come_before_warnings() -> None:
    """Problems are sorted: every error before any warning."""
    problems = problems_of("broken_unhandled_failure")
    severities = [p.severity for p in problems]
    assert severities == sorted(severities, key=lambda s: s is not Severity.ERROR)


def test_validate_raises_listing_each_error() -> None:
    """validate() raises ChoreographyError naming every error, one per line."""
    graph = discover(FIXTURES + "broken_unknown_undone_step").choreography()
    with pytest.raises(ChoreographyError) as info:
        validate(graph)
    text = str(info.value)
    assert "2 problem(s)" in text
    assert "\n  unknown-undone-step: shop.release:" in text
    assert "\n  missing-compensation: shop.reserve:" in text


def test_problem_str_names_severity_and_code() -> None:
    """A problem prints as ``severity code: message``."""
    problem = problems_of("broken_dead_end_event")[0]
    assert str(problem) == f"error dead-end-event: {problem.message}"


@dataclass(frozen=True)
class Started(Event):
    """Start of an ad-hoc saga."""

    __avro_name__: ClassVar[str] = "test.adhoc.Started"


def test_a_service_with_no_saga_has_no_saga_problem() -> None:
    """Handlers outside any saga are still checked for dead ends and missing producers."""
    audit = Service("audit")

    @audit.listener(on=Started)
    def note(event: Started) -> None:
        return None

    problems = check(Choreography.from_services([audit]))
    assert [(p.code.value, p.handler) for p in problems] == [("never-emitted", "note")]


def test_chain_in_the_wrong_order_is_an_error_explained_with_the_chain() -> None:
    """A failure whose compensations undo the first step before the second is reported."""
    problems = problems_of("broken_chain_order")
    problem = only(problems, ProblemCode.CHAIN_ORDER)
    assert codes(problems) == {"compensation-chain-order"}
    assert (problem.service, problem.handler, problem.severity) == ("shop", "ship", Severity.ERROR)
    assert problem.event == "test.chain_order.ShipFailed"
    assert problem.chain == (
        "test.chain_order.ShipFailed -> shop.release (undoes shop.reserve) -> "
        "test.chain_order.Released -> shop.refund (undoes shop.charge) -> "
        "test.chain_order.Refunded -> shop.reject (undoes shop.start) -> test.chain_order.Failed"
    )
    assert "expected shop.charge then shop.reserve then the saga's start (shop.start)" in (
        problem.message
    )
    assert "shop.reserve is undone at step 1 of the chain, not after shop.charge (step 2)" in (
        problem.message
    )
    assert problem.chain in problem.message


def test_chain_that_misses_a_completed_step_is_an_error() -> None:
    """A failure whose compensations never undo a completed step names that step."""
    problems = problems_of("broken_chain_incomplete")
    problem = only(problems, ProblemCode.CHAIN_INCOMPLETE)
    assert codes(problems) == {"compensation-chain-incomplete"}
    assert problem.event == "test.chain_order.ShipFailed"
    assert "no compensation undoes shop.reserve, completed before shop.ship failed" in (
        problem.message
    )
    assert problem.chain.startswith("test.chain_order.ShipFailed -> shop.refund")


def test_chains_of_the_valid_example_undo_in_reverse_order() -> None:
    """Every failure of the valid example triggers a chain undoing what completed, last first."""
    from choreo.choreography.chains import compensation_chains

    ch = discover(FIXTURES + "valid_order").choreography()
    chains = {chain.failure: chain for chain in compensation_chains(ch)}
    assert set(chains) == {
        "test.shop.InventoryReservationFailed",
        "test.shop.PaymentDeclined",
        "test.shop.ShipmentDispatchFailed",
    }
    dispatch = chains["test.shop.ShipmentDispatchFailed"]
    assert dispatch.expected == ("shipping.create", "payment.charge", "inventory.reserve",
                                 "order.start")
    assert [dispatch.level_of(step) for step in dispatch.expected] == [1, 2, 3, 4]
    assert dispatch.missed == () and dispatch.out_of_order == ()
    assert chains["test.shop.InventoryReservationFailed"].completed == ("order.start",)


def test_parallel_steps_may_be_undone_in_either_order() -> None:
    """Two steps on parallel branches have no order between them; undoing both at once is fine."""
    from choreo.choreography.chains import compensation_chains
    from choreo.choreography.service import Saga

    @dataclass(frozen=True)
    class Go(Event):
        __avro_name__: ClassVar[str] = "test.parallel.Go"

    @dataclass(frozen=True)
    class A(Event):
        __avro_name__: ClassVar[str] = "test.parallel.A"

    @dataclass(frozen=True)
    class B(Event):
        __avro_name__: ClassVar[str] = "test.parallel.B"

    @dataclass(frozen=True)
    class Bad(Event):
        __avro_name__: ClassVar[str] = "test.parallel.Bad"

    @dataclass(frozen=True)
    class UndoneA(Event):
        __avro_name__: ClassVar[str] = "test.parallel.UndoneA"

    @dataclass(frozen=True)
    class UndoneB(Event):
        __avro_name__: ClassVar[str] = "test.parallel.UndoneB"

    @dataclass(frozen=True)
    class Done(Event):
        __avro_name__: ClassVar[str] = "test.parallel.Done"

    @dataclass(frozen=True)
    class Failed(Event):
        __avro_name__: ClassVar[str] = "test.parallel.Failed"

    saga = Saga("Parallel", start=Go, completed=Done, failed=Failed)
    left, right, end = (Service(name, sagas=[saga]) for name in ("left", "right", "end"))

    @left.step(on=Go, emits=A)
    def step_a(event: Go) -> A:
        return A()

    @right.step(on=Go, emits=B)
    def step_b(event: Go) -> B:
        return B()

    @end.pivot(on=[A, B], emits=Done, fails_with=Bad)
    def finish(event: A | B) -> Done:
        return Done()

    @left.compensation(undoes=step_a, on=Bad, emits=UndoneA)
    def undo_a(event: Bad) -> UndoneA:
        return UndoneA()

    @right.compensation(undoes=step_b, on=Bad, emits=UndoneB)
    def undo_b(event: Bad) -> UndoneB:
        return UndoneB()

    ch = Choreography.from_services([left, right, end])
    [chain] = compensation_chains(ch)
    assert chain.completed == ("left.step_a", "right.step_b")
    assert chain.before == ()  # neither branch comes before the other
    assert chain.level_of("left.step_a") == 1 and chain.level_of("right.step_b") == 1
    assert chain.out_of_order == () and chain.missed == ()
    assert not {p.code for p in check(ch)} & {ProblemCode.CHAIN_ORDER, ProblemCode.CHAIN_INCOMPLETE}


def test_failure_ended_by_a_step_without_compensations_misses_the_completed_steps() -> None:
    """A failure a forward step turns straight into the failed event undoes nothing."""
    from choreo.choreography.service import Saga

    @dataclass(frozen=True)
    class Go(Event):
        __avro_name__: ClassVar[str] = "test.shortcut.Go"

    @dataclass(frozen=True)
    class Held(Event):
        __avro_name__: ClassVar[str] = "test.shortcut.Held"

    @dataclass(frozen=True)
    class Bad(Event):
        __avro_name__: ClassVar[str] = "test.shortcut.Bad"

    @dataclass(frozen=True)
    class Freed(Event):
        __avro_name__: ClassVar[str] = "test.shortcut.Freed"

    @dataclass(frozen=True)
    class Done(Event):
        __avro_name__: ClassVar[str] = "test.shortcut.Done"

    @dataclass(frozen=True)
    class Failed(Event):
        __avro_name__: ClassVar[str] = "test.shortcut.Failed"

    saga = Saga("Shortcut", start=Go, completed=Done, failed=Failed)
    svc = Service("svc", sagas=[saga])
    end = Service("end", sagas=[saga])

    @svc.step(on=Go, emits=Held)
    def hold(event: Go) -> Held:
        return Held()

    @svc.pivot(on=Held, emits=Done, fails_with=Bad)
    def finish(event: Held) -> Done:
        return Done()

    @svc.compensation(undoes=hold, on=Freed, emits=Failed)
    def free(event: Freed) -> Failed:
        return Failed()

    @end.retriable(on=Bad, emits=Failed)
    def give_up(event: Bad) -> Failed:
        return Failed()

    problems = check(Choreography.from_services([svc, end]))
    problem = only(problems, ProblemCode.CHAIN_INCOMPLETE)
    assert "no compensation undoes svc.hold" in problem.message
    assert problem.chain == "test.shortcut.Bad -> (no compensation reacts to it)"
