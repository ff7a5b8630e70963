"""One line for a failure a worker meets: what happened, in words, and whether it ends.

:meth:`Worker.run <choreo.runtime.worker.Worker.run>` rolls the batch back and backs off
after an error it can retry. An infrastructure failure it knows (the store's database
connection lost, the database rolling the transaction back, a Kafka error that is not
fatal) is an event of the platform, not a defect of the worker: it gets one WARNING line
saying what happened and what the worker does next, and its traceback goes to DEBUG. Any
other exception may be a bug and keeps its traceback at ERROR. A fatal one (a fenced
producer, a configuration or fatal client error) ends the worker: :func:`fatal_reason`
says why.
"""

from __future__ import annotations

from choreo.errors import ConfigurationError, TransactionError, TransportError
from choreo.model.context import EventLogger
from choreo.store.pg_errors import connection_lost, first_line

__all__ = ["describe_failure", "fatal_reason", "log_retried_failure", "rolls_back_transaction"]


def log_retried_failure(log: EventLogger, exc: Exception, backoff: float) -> None:
    """Log a failure the worker retries after ``backoff`` seconds (from its ``except``).

    A known infrastructure failure is one WARNING line (its traceback at DEBUG); anything
    else keeps its traceback at ERROR.
    """
    what = describe_failure(exc)
    if what is None:
        log.exception("worker error; backing off %.1f s (polling, partitions paused)", backoff)
        return
    log.warning(
        "%s: retrying the batch in %.1f s (partitions paused, nothing skipped)", what, backoff
    )
    log.debug("the failure's traceback", exc_info=exc)


def fatal_reason(exc: Exception, transactional_id: str | None) -> str | None:
    """Return why ``exc`` ends a worker, or None when retrying may help.

    ``transactional_id`` is the worker's producer's, if it has one (exactly-once): a
    fenced transaction is then most likely another live process with the same id.
    """
    if isinstance(exc, ConfigurationError):
        return f"configuration error: {exc}"
    if not isinstance(exc, TransportError) or not exc.fatal:
        return None
    if isinstance(exc, TransactionError) and transactional_id is not None:
        return (
            f"producer fenced or failed fatally ({exc}); another live process may use "
            f"transactional id {transactional_id!r}: give every replica its own instance_id"
        )
    return f"fatal client error: {exc}"


def rolls_back_transaction(error: BaseException) -> bool:
    """Return True when ``error`` is a database's "transaction rollback" (SQLSTATE class 40).

    Deadlocks (40P01) and serialization failures (40001) are resolved by rolling back
    and redoing the whole transaction; psycopg exposes the code as ``sqlstate``.
    """
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("40")


def describe_failure(exc: BaseException) -> str | None:
    """Return what ``exc`` means in one line if it is a known infrastructure failure, else None.

    The line names the failure and its first message line (redacted, bounded), e.g.
    ``the store's database connection was lost (OperationalError: consuming input
    failed: server closed the connection unexpectedly)``.
    """
    if connection_lost(exc):
        return f"the store's database connection was lost ({first_line(_first_loss(exc))})"
    if rolls_back_transaction(exc):
        return f"the database rolled the batch's transaction back ({first_line(exc)})"
    if isinstance(exc, TransportError) and not exc.fatal:
        return f"Kafka error ({first_line(exc)})"
    return None


def _first_loss(exc: BaseException) -> BaseException:
    """Return the earliest lost-connection error ``exc`` was raised while handling.

    A handler's statement ended by the server (``AdminShutdown``) is followed by the
    savepoint rollback failing on the closed connection; the first says what happened.
    """
    found, seen = exc, {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if connection_lost(cause):
            found = cause
        cause = cause.__cause__ or cause.__context__
    return found
