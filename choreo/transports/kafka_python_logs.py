"""kafka-python's close race, told as one DEBUG line instead of an ERROR with a traceback.

kafka-python 3 reads each broker connection on its network thread
(``kafka.net.transport.KafkaTCPTransport._read_from_sock``): it waits until the socket is
readable, then receives from it. Closing a client (a consumer's or producer's ``close``)
closes its connections from the caller's thread, which drops the transport's socket.
When that lands between the wait and the receive, the network thread calls ``recv`` on
the socket it no longer has, and kafka-python logs ``Error receiving network data
closing socket`` at ERROR with the traceback ``AttributeError: 'NoneType' object has no
attribute 'recv'``. Nothing is lost: the connection was being closed on purpose, and
kafka-python then drops it as it would anyway. (Its ``_sock_send`` checks for the missing
socket; its ``_sock_recv`` does not, in kafka-python 3.0.)

:func:`install` (run when :mod:`choreo.transports.kafka_python` is imported) adds a filter
to the ``kafka.net.transport`` logger that turns exactly that record into one DEBUG line
without a traceback, shown only where that logger has DEBUG enabled. Every other record
passes unchanged, a real receive error on a connection that is still open included (an
``OSError`` from ``recv``, or any error while the transport is not closing).
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["CLOSE_RACE_MESSAGE", "TRANSPORT_LOGGER", "install", "is_close_race"]

TRANSPORT_LOGGER: Final = "kafka.net.transport"
"""The kafka-python logger that reports receive errors of broker connections."""

CLOSE_RACE_MESSAGE: Final = (
    "%s: connection closed by the client while a read was pending (kafka-python close "
    "race, nothing lost)"
)
"""What the demoted record says instead (``%s`` is kafka-python's name of the connection)."""

_RECEIVE: Final = "_sock_recv"
_RECEIVE_ERROR: Final = ": Error receiving network data"


def is_close_race(record: logging.LogRecord) -> bool:
    """Return True when ``record`` is kafka-python's receive on a socket its close removed.

    That is: an ``AttributeError`` about ``recv`` raised in the transport's receive,
    logged about a transport that says it is closed (kafka-python names it ``<... (closed)>``;
    the text is used, as choreo's log redaction has already formatted the message).
    """
    if record.exc_info is None or record.exc_info[1] is None:
        return False
    error, tb = record.exc_info[1], record.exc_info[2]
    if not isinstance(error, AttributeError) or "'recv'" not in str(error) or tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    if tb.tb_frame.f_code.co_name != _RECEIVE:
        return False
    return _closed_transport(record) is not None


def _closed_transport(record: logging.LogRecord) -> str | None:
    """Return kafka-python's name of the closed transport a receive error is about, or None."""
    head, found, _ = record.getMessage().partition(_RECEIVE_ERROR)
    return head if found and head.endswith(" (closed)>") else None


class _CloseRaceFilter(logging.Filter):
    """Demotes the close race (:func:`is_close_race`) to one DEBUG line; passes the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not is_close_race(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.msg, record.args = CLOSE_RACE_MESSAGE, (_closed_transport(record),)
        record.exc_info = record.exc_text = record.stack_info = None
        # the logger let the ERROR through; the DEBUG line is shown only where it enables DEBUG
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER: Final = _CloseRaceFilter()


def install() -> None:
    """Add the close-race filter to kafka-python's transport logger (once per process)."""
    logger = logging.getLogger(TRANSPORT_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
