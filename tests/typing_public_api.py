"""The public API pinned by type: mypy checks these ``assert_type`` calls (never run).

tests/test_public_api.py pins the names ``choreo`` exports; this file pins what they
are: the classes the names stand for, what the main calls return and that the handler
decorators give back the function they decorate, unchanged. It is in mypy's ``files``
(pyproject.toml), so a change of any of these types fails the type check. The functions
below are never called: ``assert_type`` only speaks to the type checker.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, assert_type

import choreo
import choreo.app
import choreo.avro.serde
import choreo.choreography.checks
import choreo.choreography.graph
import choreo.choreography.service
import choreo.model.context
import choreo.model.envelope
import choreo.model.events
import choreo.runtime
import choreo.store
import choreo.store.postgres
import choreo.tracker
import choreo.transports


@dataclass(frozen=True, slots=True, kw_only=True)
class Ordered(choreo.Event):
    """An event of the examples below."""

    __avro_name__: ClassVar[str] = "typing.Ordered"
    order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserved(choreo.Event):
    """An event of the examples below."""

    __avro_name__: ClassVar[str] = "typing.Reserved"
    order_id: str


def exported_names_are_the_modules_classes() -> None:
    """Each exported name is the class or function of the module that defines it."""
    assert_type(choreo.Service("typing"), choreo.choreography.service.Service)
    assert_type(choreo.Retry(), choreo.choreography.service.Retry)
    assert_type(choreo.StepKind, type[choreo.choreography.service.StepKind])
    assert_type(choreo.Role, type[choreo.model.envelope.Role])
    assert_type(choreo.Header.EVENT_ID, str)
    assert_type(choreo.event_type_of(Ordered), str)
    assert_type(choreo.SagaTimedOut, type[choreo.model.events.SagaTimedOut])
    assert_type(choreo.Context, type[choreo.model.context.Context])
    assert_type(choreo.Envelope, type[choreo.model.envelope.Envelope])
    assert_type(choreo.Choreography, type[choreo.choreography.graph.Choreography])
    assert_type(choreo.Problem, type[choreo.choreography.checks.Problem])
    assert_type(choreo.EventSerde, type[choreo.avro.serde.EventSerde])
    assert_type(choreo.Worker, type[choreo.runtime.Worker])
    assert_type(choreo.WorkerConfig, type[choreo.runtime.WorkerConfig])
    assert_type(choreo.Publisher, type[choreo.runtime.Publisher])
    assert_type(choreo.Tracker, type[choreo.tracker.Tracker])
    assert_type(choreo.SagaStatus, type[choreo.tracker.SagaStatus])
    assert_type(choreo.SagaState, type[choreo.tracker.SagaState])
    assert_type(choreo.SagaTrace, type[choreo.tracker.SagaTrace])
    assert_type(choreo.SagaQuery, type[choreo.tracker.SagaQuery])
    assert_type(choreo.MemoryBus, type[choreo.transports.MemoryBus])
    assert_type(choreo.open_store("memory:"), choreo.store.Store)
    assert_type(choreo.SqliteStore, type[choreo.store.SqliteStore])
    assert_type(choreo.PostgresStore, type[choreo.store.postgres.PostgresStore])
    assert_type(choreo.MemoryStore, type[choreo.store.MemoryStore])
    assert_type(choreo.SqliteInbox, type[choreo.store.SqliteStore])  # the older name
    assert_type(choreo.KafkaConfig, type[choreo.transports.KafkaConfig])
    assert_type(choreo.App, type[choreo.app.App])
    assert_type(choreo.AppRun, type[choreo.app.AppRun])


def errors_form_one_hierarchy() -> None:
    """Every exported error is a ChoreoError (mypy rejects an assignment that is not)."""
    errors: list[choreo.ChoreoError] = [
        choreo.ChoreographyError("x"),
        choreo.ConfigurationError("x"),
        choreo.SchemaError("x"),
        choreo.DecodeError("x"),
        choreo.TransientError("x"),
        choreo.BusinessFailure(),
    ]
    inconsistent: choreo.ConfigurationError = choreo.ChoreographyError("x")
    del errors, inconsistent


def declaring_keeps_the_handlers_types(ctx: choreo.Context) -> None:
    """The decorators return the decorated function itself: calling it keeps its types."""
    orders = choreo.Service("orders")
    inventory = choreo.Service("inventory")
    saga = choreo.Saga("Typing", start=Ordered, completed=Reserved, failed=Reserved)
    assert_type(saga, choreo.Saga)
    assert_type(orders.starts(saga), choreo.Saga)

    @inventory.step(on=Ordered, emits=Reserved, retry=choreo.Retry(max_attempts=3))
    def reserve(event: Ordered, ctx: choreo.Context) -> Reserved:
        return Reserved(order_id=event.order_id)

    assert_type(reserve(Ordered(order_id="o"), ctx), Reserved)

    @inventory.listener(on=Reserved)
    def note(event: Reserved) -> None:
        return None

    assert_type(note(Reserved(order_id="o")), None)
    assert_type(inventory.handlers, tuple[choreo.HandlerSpec, ...])

    graph = choreo.Choreography.from_services([orders, inventory], [saga])
    assert_type(graph, choreo.Choreography)
    assert_type(choreo.check(graph), list[choreo.Problem])


def running_and_tracking_return_what_they_say(
    serde: choreo.EventSerde, publisher: choreo.Publisher, tracker: choreo.Tracker
) -> None:
    """The runtime and tracker calls a service and an operator make, and their results."""
    saga = choreo.Saga("Typing", start=Ordered, completed=Reserved, failed=Reserved)
    assert_type(serde.encode(Ordered(order_id="o")), bytes)
    assert_type(serde.decode("typing.Ordered", b""), choreo.Event)
    assert_type(publisher.start(saga, Ordered(order_id="o")), str)
    assert_type(tracker.get("cid"), choreo.SagaTrace | None)
    assert_type(tracker.find(choreo.SagaQuery()), list[choreo.SagaTrace])
    assert_type(tracker.counts(), dict[choreo.SagaStatus, int])
    trace = tracker.get("cid")
    if trace is not None:
        assert_type(trace.state, choreo.SagaState)
        assert_type(trace.status, choreo.SagaStatus)
    bus = choreo.MemoryBus()
    assert_type(choreo.open_transport("memory", bus=bus), choreo.transports.Transport)


def testing_with_the_kit_returns_what_it_says(kit: choreo.SagaTestKit) -> None:
    """given/when/expect, virtual time and the tracker's view keep their types."""
    inventory = choreo.Service("inventory")
    saga = choreo.Saga("Typing", start=Ordered, completed=Reserved, failed=Reserved)

    @inventory.step(on=Ordered, emits=Reserved)
    async def reserve(event: Ordered, ctx: choreo.Context) -> Reserved:
        return Reserved(order_id=event.order_id)

    decorated: Callable[[Ordered, choreo.Context], Coroutine[Any, Any, Reserved]] = reserve
    del decorated  # the decorator returned the coroutine function itself
    kit.given(inventory, "INSERT INTO stock VALUES (?)", ("book",))
    cid = kit.when(saga, Ordered(order_id="o"))
    assert_type(cid, str)
    assert_type(kit.expect(cid, [Ordered, Reserved], status="Completed"), choreo.SagaTrace)
    assert_type(kit.advance(30), int)
    assert_type(kit.query(inventory, "SELECT 1"), list[tuple[Any, ...]])
    assert_type(kit.tracker(), choreo.Tracker)
    assert_type(kit.trace(cid).status, choreo.SagaStatus)
    assert_type(kit.verify().ok, bool)
    assert_type(kit.publisher(inventory), choreo.Publisher)


def the_app_wires_and_runs_in_one_line(service: choreo.Service) -> None:
    """``App`` takes services and schemas; its runs start sagas and return the tracker's view."""
    saga = choreo.Saga("Typing", start=Ordered, completed=Reserved, failed=Reserved)
    app = choreo.App([service], schemas="schemas/", store="sqlite:///{service}.db")
    with app.in_memory() as running:
        assert_type(running, choreo.AppRun)
        assert_type(running.start(saga, Ordered(order_id="o")), str)
        assert_type(running.wait("cid", timeout=5.0), choreo.SagaTrace)
        assert_type(running.publisher(service), choreo.Publisher)
        assert_type(running.tracker, choreo.Tracker | None)
        assert_type(running.stores, dict[str, choreo.Store])
    assert_type(app.on_kafka("127.0.0.1:9092"), choreo.AppRun)
    assert_type(app.run("127.0.0.1:9092", stop=None), None)
