"""The context a handler receives: the incoming event's envelope, a logger and ``emit``."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from choreo.model.envelope import Envelope
from choreo.model.events import Event

__all__ = ["Context", "EventLogger"]


class EventLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that stamps every line with service, event type and correlation id.

    Its ``extra`` fields (service, event type, correlation id and, when known, event id
    and saga) are passed on every record for structured formatters.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix the message with the event's ids and pass them as ``extra`` fields.

        The prefix itself is passed as ``event_prefix``, so a structured formatter
        (:class:`~choreo.observability.logs.JsonFormatter`) can drop it from the message.
        """
        extra = dict(self.extra or {})
        prefix = (
            f"[{extra.get('service')} {extra.get('event_type')} "
            f"cid={extra.get('correlation_id')}] "
        )
        kwargs["extra"] = {**extra, "event_prefix": prefix, **kwargs.get("extra", {})}
        return f"{prefix}{msg}", kwargs


class Context:
    """What a handler may use while it handles one event.

    ``envelope`` is the incoming event's envelope, ``attempt`` counts from 1 on retries,
    ``db`` is the connection the runtime handles this batch in (SQLite inbox) when there
    is one, so a handler's state changes commit atomically with the inbox record.
    Events passed to :meth:`emit` are published after the handler returns, like returned
    ones, and inherit the correlation id, saga and causation.
    """

    __slots__ = ("_emitted", "attempt", "db", "envelope", "log", "service")

    def __init__(
        self,
        envelope: Envelope,
        *,
        service: str,
        attempt: int = 1,
        db: Any = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.envelope = envelope
        self.service = service
        self.attempt = attempt
        self.db = db
        self.log = EventLogger(
            logger or logging.getLogger(f"choreo.handler.{service}"),
            {
                "service": service,
                "event_type": envelope.event_type,
                "correlation_id": envelope.correlation_id,
                "event_id": envelope.event_id,
                "saga": envelope.saga,
            },
        )
        self._emitted: list[Event] = []

    @property
    def correlation_id(self) -> str:
        """Return the saga's correlation id."""
        return self.envelope.correlation_id

    def emit(self, event: Event) -> None:
        """Queue ``event`` to be published when the handler returns."""
        if not isinstance(event, Event):
            raise TypeError(f"emit() takes an Event, not {type(event).__qualname__}")
        self._emitted.append(event)

    def take_emitted(self) -> list[Event]:
        """Return and forget the events queued with :meth:`emit` (used by the runtime)."""
        emitted, self._emitted = self._emitted, []
        return emitted
