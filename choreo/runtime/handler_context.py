"""The context the worker hands to handlers: a :class:`~choreo.model.context.Context` built lazily.

A handler that never looks at ``ctx.envelope``, ``ctx.log`` or ``ctx.db`` should not pay
for them: on the worker's hot path the envelope object, the per-event logger and the
database savepoint are most of a context's cost. :class:`HandlerContext` keeps the incoming
record's headers and builds the envelope (and the logger stamped with its ids) on first
access, and opens the savepoint that brackets the handler's database writes only when the
handler first touches ``ctx.db``; :func:`settle` then keeps or undoes those writes.
Everything else is the plain :class:`~choreo.model.context.Context`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from choreo.model.context import Context, EventLogger
from choreo.model.envelope import Envelope
from choreo.runtime.routing import read_envelope
from choreo.store import Inbox

__all__ = ["HandlerContext", "new_context", "settle"]


class HandlerContext(Context):
    """A :class:`~choreo.Context` whose ``envelope`` and ``log`` are built on first use."""

    __slots__ = ("_headers", "_inbox", "_lazy_envelope", "_lazy_log", "_logger", "_savepoint")

    _headers: Mapping[str, bytes]
    _inbox: Inbox | None
    _lazy_envelope: Envelope | None
    _lazy_log: EventLogger | None
    _logger: logging.Logger
    _savepoint: bool

    @property
    def db(self) -> Any:
        """Return the inbox's connection (opening this attempt's savepoint), or None."""
        inbox = self._inbox
        if inbox is None:
            return None
        if not self._savepoint:
            inbox.savepoint()
            self._savepoint = True
        return inbox.connection

    @db.setter
    def db(self, value: Any) -> None:
        raise AttributeError("ctx.db is set by the runtime")

    @property
    def envelope(self) -> Envelope:
        """Return the incoming event's envelope (read from the record's headers once)."""
        envelope = self._lazy_envelope
        if envelope is None:
            envelope = self._lazy_envelope = read_envelope(self._headers)
        return envelope

    @envelope.setter
    def envelope(self, value: Envelope) -> None:
        self._lazy_envelope = value

    @property
    def log(self) -> EventLogger:
        """Return a logger stamping lines with service, event type and correlation id."""
        log = self._lazy_log
        if log is None:
            envelope = self.envelope
            log = self._lazy_log = EventLogger(
                self._logger,
                {
                    "service": self.service,
                    "event_type": envelope.event_type,
                    "correlation_id": envelope.correlation_id,
                    "event_id": envelope.event_id,
                    "saga": envelope.saga,
                },
            )
        return log

    @log.setter
    def log(self, value: EventLogger) -> None:
        self._lazy_log = value


_new = object.__new__


def new_context(
    headers: Mapping[str, bytes],
    service: str,
    attempt: int,
    inbox: Inbox | None,
    logger: logging.Logger,
) -> HandlerContext:
    """Return a context for the record with ``headers`` (validated by the caller).

    ``inbox`` is the store whose connection ``ctx.db`` hands out (None: no database).
    """
    ctx: HandlerContext = _new(HandlerContext)
    ctx._headers = headers
    ctx._lazy_envelope = None
    ctx._lazy_log = None
    ctx._logger = logger
    ctx._inbox = inbox
    ctx._savepoint = False
    ctx.service = service
    ctx.attempt = attempt
    ctx._emitted = []
    return ctx


def settle(ctx: HandlerContext, *, keep: bool) -> None:
    """Keep (``keep=True``) or undo the database writes the handler made through ``ctx.db``."""
    if ctx._savepoint:
        ctx._savepoint = False
        assert ctx._inbox is not None
        if keep:
            ctx._inbox.release_savepoint()
        else:
            ctx._inbox.rollback_to_savepoint()
