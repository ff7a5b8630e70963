"""Fixtures of the example services' tests: a handler context and SagaTimedOut events."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

import pytest

from choreo import Context, Envelope, Role, SagaTimedOut
from choreo.model.envelope import new_event_id, now_ms
from services.saga import OrderFulfillment

MakeContext = Callable[..., Context]


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    """Yield an in-memory SQLite connection in the runtime's autocommit mode."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def make_ctx() -> MakeContext:
    """Return a factory of handler contexts for an order (``db`` is the runtime's connection)."""

    def make(
        order_id: str,
        *,
        service: str = "test",
        event_type: str = "shop.test.Event",
        event_id: str | None = None,
        db: sqlite3.Connection | None = None,
    ) -> Context:
        envelope = Envelope(
            event_type=event_type,
            event_id=event_id or new_event_id(),
            correlation_id=order_id,
            saga=OrderFulfillment.name,
            role=Role.STEP,
            service="upstream",
            produced_at_ms=now_ms(),
        )
        return Context(envelope, service=service, db=db)

    return make


@pytest.fixture
def timed_out() -> Callable[[str, str], SagaTimedOut]:
    """Return a factory of SagaTimedOut events: ``timed_out(order_id, overdue_step)``."""

    def make(order_id: str, step: str) -> SagaTimedOut:
        return SagaTimedOut(
            saga=OrderFulfillment.name,
            correlation_id=order_id,
            step=step,
            deadline_ms=30_000,
            detected_at=now_ms(),
        )

    return make


@pytest.fixture
def handler() -> Callable[..., Callable[..., object]]:
    """Return a lookup of a service's handler function by name: ``handler(service, "charge")``."""

    def find(service: object, name: str) -> Callable[..., object]:
        for spec in service.handlers:  # type: ignore[attr-defined]
            if spec.name == name:
                func: Callable[..., object] = spec.func
                return func
        raise LookupError(f"{service!r} has no handler {name}")

    return find
