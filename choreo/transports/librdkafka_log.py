"""librdkafka's log lines as Python log records, never raw lines on stderr.

A confluent-kafka client created without a ``logger`` setting prints librdkafka's log
lines (``%6|1796332119.361|BGQUEUE|...``) straight to stderr, around choreo's own
messages. :data:`LIBRDKAFKA_LOG` is what every confluent-kafka client choreo creates gets
as its ``logger``: each line becomes a record of the ``choreo.transports.librdkafka``
logger (redacted like every choreo log line, shown at the CLI's ``--log-level``), with its
facility, client name and text. Some lines are logged at DEBUG because choreo says the
same thing itself, once, in its own words:

- facility ``FATAL``, and any line saying the client was fenced (``TXNERR``,
  ``ADDOFFSETS``, … of a producer fenced by a newer one with its transactional id): a
  fatal client error, which choreo's transports raise as a fatal
  :class:`~choreo.errors.TransportError`; the worker stops with a message saying why.
- facility ``BGQUEUE``: events a client still held when it was destroyed (e.g. a result
  nobody waits for any more); nothing is lost that choreo relies on.
"""

from __future__ import annotations

import logging
from typing import Any, Final

__all__ = ["LIBRDKAFKA_LOG", "LIBRDKAFKA_LOGGER", "LibrdkafkaLog"]

LIBRDKAFKA_LOGGER: Final = logging.getLogger("choreo.transports.librdkafka")
"""The logger whose records are librdkafka's log lines."""

_RESTATED: Final = frozenset({"FATAL", "BGQUEUE"})
"""Facilities logged at DEBUG: choreo reports what they say itself (module docstring)."""


class LibrdkafkaLog:
    """The ``logger`` of a confluent-kafka client: librdkafka's lines as Python log records.

    confluent-kafka calls :meth:`log` with the Python level of the line, the format
    ``"%s [%s] %s"`` and the facility, the client's name and the text.
    """

    def __init__(self, target: logging.Logger = LIBRDKAFKA_LOGGER) -> None:
        self.target = target

    def log(self, level: int, msg: str, *args: Any) -> None:
        """Log one librdkafka line on :attr:`target`, at DEBUG for a restated one."""
        if args and (args[0] in _RESTATED or "fenced" in str(args[-1])):
            level = logging.DEBUG
        self.target.log(level, msg, *args)


LIBRDKAFKA_LOG: Final = LibrdkafkaLog()
"""The ``logger`` setting choreo gives every confluent-kafka client it creates."""
