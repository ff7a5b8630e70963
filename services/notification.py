"""The notification service: tells the customer how the order ended (a listener).

It takes no part in the saga: its ``NotificationSent`` events are notices, and it keeps
the notifications it sent in its own table of the service's store, one per triggering event, so a
redelivered event never notifies twice.
"""

from __future__ import annotations

from typing import Any

from choreo import Context, Service
from choreo.store import execute
from services import events as ev
from services.config import ServiceConfig
from services.saga import OrderFulfillment
from services.store import Store, now_ms

__all__ = ["Outbox", "create", "service"]


class Outbox(Store):
    """The notifications the service sent."""

    SERVICE = "notification"
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS notifications (
            id {serial},
            order_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            channel TEXT NOT NULL,
            cause_event_id TEXT NOT NULL UNIQUE,
            sent_ms BIGINT NOT NULL)""",
    )

    def send(self, conn: Any, order_id: str, kind: str, channel: str, cause: str) -> bool:
        """Record a notification for ``cause`` once; return False when it was sent already."""
        cursor = execute(
            conn,
            "INSERT INTO notifications (order_id, kind, channel, cause_event_id, sent_ms)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (cause_event_id) DO NOTHING",
            (order_id, kind, channel, cause, now_ms()),
        )
        return bool(cursor.rowcount == 1)

    def sent(self, conn: Any, order_id: str) -> list[str]:
        """Return the kinds of notification sent about ``order_id``, oldest first."""
        rows = execute(
            conn, "SELECT kind FROM notifications WHERE order_id = ? ORDER BY id", (order_id,)
        ).fetchall()
        return [str(row[0]) for row in rows]


def create(config: ServiceConfig | None = None, *, outbox: Outbox | None = None) -> Service:
    """Return the notification service, its handler bound to ``outbox``."""
    config = config or ServiceConfig.from_env()
    store = outbox or Outbox(config.db_path("notification"))
    notification = Service("notification", sagas=[OrderFulfillment], migrations=store.migrations())

    @notification.listener(on=[ev.OrderCompleted, ev.OrderFailed], emits=ev.NotificationSent)
    def notify(
        event: ev.OrderCompleted | ev.OrderFailed, ctx: Context
    ) -> ev.NotificationSent | None:
        """E-mail the customer that the order shipped, or that it failed and was refunded."""
        kind = "order-completed" if isinstance(event, ev.OrderCompleted) else "order-failed"
        channel = ev.Channel.EMAIL
        with store.transaction(ctx.db) as conn:
            sent = store.send(conn, event.order_id, kind, str(channel), ctx.envelope.event_id)
        if not sent:
            ctx.log.debug("notification sent already")
        return ev.NotificationSent(order_id=event.order_id, channel=channel, kind=kind)

    return notification


service = create()
"""The notification service configured from ``SHOP_*`` variables (``choreo run``'s target)."""
