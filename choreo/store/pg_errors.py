"""A lost PostgreSQL connection: recognised, said in one line, and psycopg's own warnings quieted.

A connection of the store's pool can die under a worker at any time: the server restarts
or fails over, an administrator runs ``pg_terminate_backend``, a network path drops. The
batch's transaction is gone with it, nothing of it was committed, and the worker rolls the
batch back and handles it again on a new connection (see
:meth:`choreo.runtime.worker.Worker.run`). :func:`connection_lost` tells such an error
from a failing statement; :func:`first_line` is the part of its message worth a log line
(libpq adds lines of guesses). psycopg and psycopg_pool log the same loss again as
warnings of their own while the dead connection is torn down; :func:`quiet_lost_connection_warnings`
logs those two at DEBUG, as the worker's one WARNING line says it all.
"""

from __future__ import annotations

import logging
from typing import Final

from choreo.safety.redact import redact_text

__all__ = ["connection_lost", "first_line", "quiet_lost_connection_warnings"]

_MAX_LINE: Final = 300
_LOST_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03"})
"""admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown,
cannot_connect_now; SQLSTATE class 08 (connection exception) counts too."""
_PSYCOPG_CONNECTION_ERRORS: Final = frozenset({"OperationalError", "InterfaceError"})
_RESTATED: Final = (
    ("psycopg", "error ignored terminating "),  # a pipeline on a dead connection
    ("psycopg.pool", "discarding closed connection"),  # the pool replaces it
)


def connection_lost(exc: BaseException) -> bool:
    """Return True when ``exc`` says the database connection is gone (not a failed statement).

    SQLSTATE class 08 (connection exception) and 57P01-57P03 (the server ended the
    session), or a psycopg / psycopg_pool ``OperationalError`` or ``InterfaceError``
    without an SQLSTATE (libpq lost the socket, the pool found no live connection).
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith("08") or sqlstate in _LOST_SQLSTATES
    return any(
        cls.__module__.startswith("psycopg") and cls.__name__ in _PSYCOPG_CONNECTION_ERRORS
        for cls in type(exc).__mro__
    )


def first_line(exc: BaseException) -> str:
    """Return the first line of ``exc``'s message, redacted and bounded, after its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = redact_text(text)[:_MAX_LINE]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _RestatedFilter(logging.Filter):
    """Re-log psycopg's warnings about a connection choreo reports lost at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False (and log the record's message at DEBUG instead) for a restated one."""
        if record.levelno <= logging.DEBUG:
            return True
        for name, start in _RESTATED:
            if record.name == name and str(record.msg).startswith(start):
                logging.getLogger(name).debug(record.getMessage())
                return False
        return True


_FILTER: Final = _RestatedFilter()


def quiet_lost_connection_warnings() -> None:
    """Log psycopg's two warnings about a lost connection at DEBUG (idempotent).

    ``error ignored terminating <Pipeline [BAD]>`` and ``discarding closed connection``
    come after the error the store raised; the worker logs that one once, saying what
    it does next.
    """
    for name, _ in _RESTATED:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
