"""Structured logs: one JSON object per line, with the ids of the event a record concerns.

:class:`JsonFormatter` turns a :class:`logging.LogRecord` into one line of JSON. Records
logged through choreo's :class:`~choreo.model.context.EventLogger` (the worker's per-event
lines and a handler's ``ctx.log``) carry the event's ids as ``extra`` fields; the
formatter writes them as top-level keys: ``service``, ``event_type``, ``correlation_id``,
``event_id``, ``saga`` and ``step``. When OpenTelemetry is in use, the current span's
``trace_id`` and ``span_id`` are added, so a log line leads to its trace.

What a line may hold is a fixed list of keys: other ``extra`` fields are never written
(they may hold anything, secrets included), the message and the exception text go
through :func:`choreo.safety.redact.redact_text` (registered secrets, values of
secret-looking settings such as ``sasl.password=...`` and URL passwords are masked), and
every string is cut to a bounded length. JSON escaping makes
control characters harmless for terminals and log shippers.

:func:`use_json_logs` installs the formatter on the root logger (what ``choreo run
--log-format json`` does).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO, Any, Final

from choreo.safety.redact import redact_text

__all__ = ["EVENT_FIELDS", "JsonFormatter", "use_json_logs"]

EVENT_FIELDS: Final = ("service", "event_type", "correlation_id", "event_id", "saga", "step")
"""The ``extra`` fields a JSON line carries when a record has them, in this order."""

MAX_MESSAGE: Final = 8_192
"""Longest message (and exception text) written, in characters."""
MAX_FIELD: Final = 256
"""Longest value of an event field written, in characters."""

_EMPTY: Final = frozenset({"", "-", None})


def _bounded(text: str, limit: int) -> str:
    """Return ``text`` cut to ``limit`` characters, marking a cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON with a fixed set of keys (see the module docs).

    Keys, in order: ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``; then those of :data:`EVENT_FIELDS` the record carries; ``trace_id`` and
    ``span_id`` of the current OpenTelemetry span when there is one; ``exception`` (the
    formatted traceback) when the record has one. ``static`` adds constant keys to every
    line (e.g. ``{"service": "payment"}`` for records outside any event); a record's own
    event fields win over them.
    """

    def __init__(self, *, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = {k: _bounded(str(v), MAX_FIELD) for k, v in (static or {}).items()}

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON (no newline inside it)."""
        message = record.getMessage()
        message = _without_prefix(message, record.__dict__)
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": _bounded(redact_text(message), MAX_MESSAGE),
        }
        line.update(self.static)
        fields = record.__dict__
        for name in EVENT_FIELDS:
            value = fields.get(name)
            if value not in _EMPTY:
                line[name] = _bounded(str(value), MAX_FIELD)
        line.update(_current_span())
        if record.exc_info and record.exc_info[0] is not None:
            text = self.formatException(record.exc_info)
            line["exception"] = _bounded(redact_text(text), MAX_MESSAGE)
        elif record.exc_text:
            line["exception"] = _bounded(redact_text(record.exc_text), MAX_MESSAGE)
        return json.dumps(line, ensure_ascii=False, default=str)


def _without_prefix(message: str, fields: dict[str, Any]) -> str:
    """Return ``message`` without the ``[service type cid=...] `` prefix of text logs.

    The prefix is the record's ``event_prefix`` when an EventLogger gave one; otherwise a
    leading ``[<service>...] `` of a record that carries its ``service``.
    """
    prefix = fields.get("event_prefix")
    if isinstance(prefix, str):
        return message[len(prefix) :] if message.startswith(prefix) else message
    service = fields.get("service")
    if isinstance(service, str) and message.startswith(f"[{service}"):
        end = message.find("] ")
        if end != -1:
            return message[end + 2 :]
    return message


def _current_span() -> dict[str, str]:
    """Return the current OpenTelemetry span's ids, or nothing (not imported, no span)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # OpenTelemetry not in use: nothing to look up, nothing imported
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def use_json_logs(
    level: int | str | None = None,
    *,
    stream: IO[str] | None = None,
    static: dict[str, str] | None = None,
) -> logging.Handler:
    """Make the root logger write JSON lines to ``stream`` (stderr); return the new handler.

    Every handler the root logger had is removed first, so each record is written once;
    ``level`` (when given) becomes the root logger's level. ``static`` is passed to
    :class:`JsonFormatter`.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(static=static))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
