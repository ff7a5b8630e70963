"""What the confluent transport's producer, consumer and transport share: the client
library's exceptions translated into :mod:`choreo.errors`, clients created and closed
within bounds, and the settings and limits the three use."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Final, TypeVar

import confluent_kafka as ck
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # OffsetSpec: not in __all__
    OffsetSpec,
)

from choreo.errors import (
    ConfigurationError,
    TransactionError,
    TransportError,
)
from choreo.transports.base import (
    TopicPartition,
)
from choreo.transports.bounded import run_bounded
from choreo.transports.librdkafka_log import LIBRDKAFKA_LOG

logger = logging.getLogger(__name__)

_ClientT = TypeVar("_ClientT")

# librdkafka-only producer settings choreo relies on.
_PRODUCER_EXTRAS: Final[Mapping[str, object]] = {
    "partitioner": "murmur2_random",
    "delivery.report.only.error": True,
}
_TXN_CALL_GRACE: Final = 5.0
"""Seconds a transactional call may outlive its own timeout before it counts as hung."""
_CLOSE_LIMIT: Final = 10.0
"""Seconds a client's close may take before the client is abandoned (see bounded.py)."""
_CONSUMER_EXTRAS: Final[Mapping[str, object]] = {
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
}
_VALUE_OF: Final = itemgetter(1)  # a header's value (C-level, for the per-batch check)
_QUEUE_FULL_WAIT: Final = 0.05  # seconds to serve callbacks when the local queue is full
_POLL_EVERY: Final = 256  # publishes between two opportunistic poll(0) calls
_QUEUE_FULL_LIMIT: Final = 60.0  # give up after this long, like Kafka's max.block.ms
_CLOSE_FLUSH_TIMEOUT: Final = 10.0
_ADMIN_TIMEOUT: Final = 30.0
_LATEST: Final[Any] = OffsetSpec.latest()  # type: ignore[no-untyped-call]
"""What ``list_offsets`` is asked for: the end of a partition."""
_FENCE_LIMIT: Final = _ADMIN_TIMEOUT
"""Seconds the abort of an abandoned producer's open transaction may take (best effort):
as long as a replacement's own registration, so a broker still restarting is waited for."""
# Errors that will not go away by trying again (fatal for a worker).
_RAISED_CONSUMER_ERRORS: Final = frozenset(
    {
        ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ck.KafkaError.GROUP_AUTHORIZATION_FAILED,
        ck.KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        ck.KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ck.KafkaError._AUTHENTICATION,
        ck.KafkaError.SASL_AUTHENTICATION_FAILED,
        # librdkafka reports a fatal consumer error (e.g. a static member fenced by another
        # with the same group.instance.id) as an event whose code is _FATAL but whose
        # fatal() is False: the consumer is dead, so it must not be logged and ignored.
        ck.KafkaError._FATAL,
    }
)


def _error_of(exc: BaseException) -> ck.KafkaError | None:
    """Return the KafkaError carried by a confluent-kafka exception, if any."""
    if exc.args and isinstance(exc.args[0], ck.KafkaError):
        return exc.args[0]
    return None


def _describe(exc: BaseException) -> str:
    """Return a one-line description of a confluent-kafka exception."""
    err = _error_of(exc)
    return f"{err.name()}: {err.str()}" if err is not None else str(exc)


def _fatal_text(err: ck.KafkaError) -> str:
    """Return a consumer error's text once: librdkafka states a fatal one's reason twice.

    A static member fenced by another reads ``Fatal error: Broker: Static consumer fenced
    by other consumer with same group.instance.id: Fatal consumer error: Broker: Static
    consumer fenced by ...``; this returns the reason (``Broker: Static consumer ...``).
    Any other error's text is returned as it is, with its name if it is not fatal.
    """
    text = str(err.str())
    if err.code() != ck.KafkaError._FATAL:
        return f"{err.name()}: {text}"
    text = text.removeprefix("Fatal error: ")
    reason, _, restated = text.partition(": Fatal consumer error: ")
    return reason if restated in ("", reason) else text


def _transport_error(exc: BaseException, what: str) -> TransportError:
    """Translate a confluent-kafka exception into a TransportError about ``what``.

    Fatal client errors and refused authentication or authorization are ``fatal``.
    """
    err = _error_of(exc)
    return TransportError(
        f"{what}: {_describe(exc)}",
        retriable=bool(err and err.retriable()),
        fatal=bool(err and (err.fatal() or err.code() in _RAISED_CONSUMER_ERRORS)),
    )


def _create(
    factory: Callable[[dict[str, Any]], _ClientT], settings: dict[str, Any], role: str
) -> _ClientT:
    """Create a client from ``settings``, translating rejected settings.

    librdkafka's own log lines go to the ``choreo.transports.librdkafka`` logger (through
    choreo's redaction filter) instead of straight to stderr
    (:mod:`choreo.transports.librdkafka_log`).
    """
    settings.setdefault("logger", LIBRDKAFKA_LOG)
    try:
        return factory(settings)
    except (ck.KafkaException, ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid {role} settings: {_describe(exc)}") from exc


def _isolation_of(settings: Mapping[str, Any]) -> ck.IsolationLevel:
    """Return the isolation level of a consumer with ``settings`` (librdkafka's default:
    ``read_committed``)."""
    level = str(settings.get("isolation.level", "read_committed")).strip().lower()
    if level == "read_uncommitted":
        return ck.IsolationLevel.READ_UNCOMMITTED
    return ck.IsolationLevel.READ_COMMITTED


def _ends_of(futures: Mapping[ck.TopicPartition, Any]) -> dict[TopicPartition, int]:
    """Return the end offsets among the answered ``futures`` of a ``list_offsets`` call."""
    ends: dict[TopicPartition, int] = {}
    for tp, future in futures.items():
        if not future.done():
            continue
        try:
            end = int(future.result().offset)
        except ck.KafkaException as exc:
            logger.debug("no end offset of %s [%d]: %s", tp.topic, tp.partition, _describe(exc))
            continue
        if end >= 0:
            ends[TopicPartition(tp.topic, tp.partition)] = end
    return ends


def _to_offsets(offsets: Mapping[TopicPartition, int]) -> list[ck.TopicPartition]:
    """Convert choreo offsets (each the next offset to read) into confluent partitions."""
    return [ck.TopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]


def _transaction_error(exc: BaseException, what: str) -> TransactionError:
    """Translate a confluent-kafka exception into a TransactionError with its flags."""
    err = _error_of(exc)
    if err is None:
        return TransactionError(f"{what}: {exc}")
    return TransactionError(
        f"{what}: {_describe(exc)}",
        retriable=err.retriable(),
        abortable=err.txn_requires_abort(),
        fatal=err.fatal(),
    )


def _close_bounded(close: Callable[[], Any], client: str, peer: str, error_level: int) -> None:
    """Run a client's ``close`` for at most ``_CLOSE_LIMIT`` s, then abandon it (logged).

    An error the close raises (a fenced client raises its fatal error again) is logged at
    ``error_level``, never raised; ``peer`` names what an unreturned close waits for.
    """
    try:
        closed = run_bounded(close, f"{client}-close", _CLOSE_LIMIT)
    except (ck.KafkaException, RuntimeError) as exc:
        logger.log(error_level, "error while closing the %s: %s", client, _describe(exc))
        return
    if not closed:
        logger.warning(
            "%s close did not return within %.0f s (%s unreachable): the client is abandoned",
            client,
            _CLOSE_LIMIT,
            peer,
        )
