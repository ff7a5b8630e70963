"""The notification service: one notification per ending, never two for one event."""

from __future__ import annotations

from typing import Any

from choreo import StepKind
from services import events as ev
from services.config import ServiceConfig
from services.notification import Outbox, create


def test_send_records_once_per_trigger() -> None:
    """The same triggering event is recorded once; another event is a new notification."""
    outbox = Outbox()
    with outbox.transaction() as conn:
        assert outbox.send(conn, "o-1", "order-completed", "EMAIL", "e-1")
        assert not outbox.send(conn, "o-1", "order-completed", "EMAIL", "e-1")
        assert outbox.sent(conn, "o-1") == ["order-completed"]


def test_notify_handler(make_ctx: Any, handler: Any) -> None:
    """notify tells the customer how the order ended, by e-mail; a redelivery sends nothing more."""
    outbox = Outbox()
    service = create(ServiceConfig(), outbox=outbox)
    notify = handler(service, "notify")
    ctx = make_ctx("o-1")
    out = notify(ev.OrderFailed(order_id="o-1", reason="declined"), ctx)
    assert out == ev.NotificationSent(order_id="o-1", channel=ev.Channel.EMAIL, kind="order-failed")
    notify(ev.OrderFailed(order_id="o-1", reason="declined"), ctx)
    done = notify(ev.OrderCompleted(order_id="o-2"), make_ctx("o-2"))
    assert done is not None and done.kind == "order-completed"
    assert outbox.query("SELECT order_id, kind FROM notifications ORDER BY id") == [
        ("o-1", "order-failed"),
        ("o-2", "order-completed"),
    ]


def test_declarations() -> None:
    """notify is a listener of both terminal events."""
    (spec,) = create(ServiceConfig()).handlers
    assert spec.kind is StepKind.LISTENER
    assert set(spec.consumed_types) == {"shop.orders.OrderCompleted", "shop.orders.OrderFailed"}
