"""The confluent-kafka (librdkafka) transport: the fast default for a real Kafka cluster.

Producers are idempotent with ``acks=all`` (see :mod:`choreo.transports.config`) and
use the ``murmur2_random`` partitioner so keys land where the Java client and
kafka-python put them. Delivery failures arrive through a delivery callback that only
fires on errors (``delivery.report.only.error``); :meth:`ConfluentProducer.flush`
raises them as one :class:`~choreo.errors.DeliveryError`. Consumers never auto-commit,
read committed records only, fetch in batches with ``consume()`` and commit
synchronously with explicit offsets. Rebalances use the eager ``range,roundrobin``
protocol by default; ``partition.assignment.strategy=cooperative-sticky`` in the
consumer settings selects the incremental (cooperative) protocol, where a rebalance
revokes only the partitions that move. Callbacks run in the thread that calls ``poll``
(or ``close``); a poll never returns a record of a partition revoked during it. A consumer
created with an ``instance_id`` is a static member (``group.instance.id``): librdkafka
does not send LeaveGroup when it closes, so its replacement gets the same partitions.

Every confluent-kafka exception is translated into :mod:`choreo.errors` here.

Why one module of over 500 lines: it holds one producer and one consumer class for one
client library, the only place that imports confluent-kafka; the behaviour both share
with the other transports is in :mod:`choreo.transports.shared`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final, TypeVar

import confluent_kafka as ck
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # OffsetSpec: not in __all__
    AdminClient,
    OffsetSpec,
)
from confluent_kafka.cimpl import NewTopic

from choreo.errors import (
    CommitError,
    ConfigurationError,
    DeliveryError,
    TransactionError,
    TransportClosedError,
    TransportError,
)
from choreo.transports.base import (
    RECORD_SHELL,
    Consumer,
    Headers,
    Outgoing,
    Record,
    TopicPartition,
    make_record,
)
from choreo.transports.bounded import BoundedCaller, run_bounded
from choreo.transports.config import KafkaConfig
from choreo.transports.existing_topics import check_existing, read_confluent
from choreo.transports.librdkafka_log import LIBRDKAFKA_LOG
from choreo.transports.readiness import wait_until_online
from choreo.transports.replication import check_brokers, check_replication, replication_configs
from choreo.transports.shared import ConsumerBase, ProducerBase, require_group_id

__all__ = ["ConfluentConsumer", "ConfluentProducer", "ConfluentTransport"]

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


_REGISTERED: Final[weakref.WeakValueDictionary[str, ConfluentProducer]] = (
    weakref.WeakValueDictionary()
)
"""The producer of this process that last registered each transactional id: closing an
older one that hung must not fence it (see :meth:`ConfluentProducer._abort_by_fencing`)."""
_REGISTERED_LOCK: Final = threading.Lock()


class _FlushFailedError(Exception):
    """A librdkafka flush that raised (see :meth:`ConfluentProducer._flush_client`)."""


class ConfluentProducer(ProducerBase):
    """A confluent-kafka producer; see the module docstring for its guarantees."""

    def __init__(self, config: KafkaConfig, transactional_id: str | None = None) -> None:
        super().__init__(transactional_id)
        settings: dict[str, Any] = dict(_PRODUCER_EXTRAS)
        settings.update(config.producer_settings(transactional_id))
        settings["on_delivery"] = self._on_delivery
        self._since_poll = 0
        self._failed_fatally = False
        self._renew: str | None = None  # why to renew the client before the next transaction
        if transactional_id is not None:
            settings["error_cb"] = self._on_client_error
        self._settings = settings
        self._caller = BoundedCaller(f"txn-{transactional_id or 'producer'}")
        self._producer = _create(ck.Producer, settings, "producer")
        if transactional_id is not None:
            seconds = self._init_transactions()
            logger.info(
                "transactional producer %s registered: init_transactions took %.1f s",
                transactional_id,
                seconds,
            )

    def _init_transactions(self) -> float:
        """Register the transactional id (fencing older instances, aborting their transaction).

        Returns the seconds it took.
        """
        started = time.monotonic()
        self._transaction_call(
            lambda: self._producer.init_transactions(_ADMIN_TIMEOUT),
            "init_transactions",
            _ADMIN_TIMEOUT,
        )
        with _REGISTERED_LOCK:
            _REGISTERED[str(self._transactional_id)] = self
        return time.monotonic() - started

    def _on_client_error(self, err: ck.KafkaError) -> None:
        """Note that every broker was unreachable (a transactional producer's error_cb)."""
        if err.code() == ck.KafkaError._ALL_BROKERS_DOWN:
            self._renew = f"{err.name()}: {err.str()}"

    def _renew_client(self, reason: str) -> None:
        """Replace the librdkafka producer by a new one with the same transactional id.

        After every broker was unreachable (a restart), librdkafka's transactional
        producer can keep a dead group coordinator and hang in
        ``send_offsets_to_transaction``; a new instance looks the coordinators up afresh
        and fences the old one. The old instance is idle (no transaction is open): it is
        purged and closed on a thread of its own, never waited for (its destruction can
        wait on the same dead lookup).
        """
        old = self._producer
        logger.warning(
            "renewing transactional producer %s after a broker outage (%s)",
            self._transactional_id,
            reason,
        )
        self._producer = _create(ck.Producer, self._settings, "producer")
        old.purge()
        run_bounded(old.close, "producer-close", 0)
        seconds = self._init_transactions()
        logger.info(
            "transactional producer %s renewed: init_transactions took %.1f s",
            self._transactional_id,
            seconds,
        )

    def _serve_callbacks(self) -> None:
        """Serve the delivery reports and error callbacks queued so far.

        librdkafka's ``poll`` raises the error of a client that failed fatally (fenced by a
        newer instance): that is remembered, and said by the next transactional call or
        :meth:`flush` as choreo's own error, never raised here as the client's.
        """
        try:
            self._producer.poll(0)
        except ck.KafkaException as exc:
            err = _error_of(exc)
            self._failed_fatally = self._failed_fatally or err is None or err.fatal()
            logger.debug("serving the producer's callbacks raised: %s", _describe(exc))

    def _flush_client(self, timeout: float | None) -> int:
        """Run librdkafka's flush; return the records still queued.

        A flush that meets a fatal error (a newer instance fenced this one) raises it, and
        confluent-kafka's flush then goes on serving delivery reports with that exception
        pending, which surfaces as an unrelated one (an ``AttributeError`` of the delivery
        callback). Whatever it raises marks the producer failed and is raised as
        :class:`_FlushFailedError`, never as the client library's (or Python's) own exception.
        """
        try:
            return self._producer.flush() if timeout is None else self._producer.flush(timeout)
        except Exception as exc:
            self._failed_fatally = True
            text = _describe(exc) if isinstance(exc, ck.KafkaException) else (
                f"the client's flush raised {type(exc).__name__} while serving its callbacks "
                "(what a fatal error, such as being fenced by a newer instance, makes it do)"
            )
            raise _FlushFailedError(text) from exc

    def _on_delivery(self, err: ck.KafkaError | None, msg: ck.Message) -> None:
        """Count a failed delivery (only failures are reported)."""
        if err is not None:
            self._record_failure(str(msg.topic()), f"{err.name()}: {err.str()}", err.retriable())

    def publish(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        """Queue one record; a record the client rejects is reported by the next flush.

        The common case (the local queue has room) is one client call; a full queue or a
        rejected record goes to :meth:`_queue_slowly`, which waits for room or counts it.
        """
        if self._closed:
            raise TransportClosedError("producer is closed")
        hdrs: Any = (headers if isinstance(headers, list) else list(headers)) if headers else None
        try:
            self._producer.produce(topic, value, key, headers=hdrs)
        except (BufferError, ck.KafkaException):  # nothing was queued
            if not self._queue_slowly(topic, value, key, hdrs):
                return
        # Serve delivery reports now and then, not per record (flush serves the rest).
        self._since_poll += 1
        if self._since_poll >= _POLL_EVERY:
            self._since_poll = 0
            self._serve_callbacks()

    def _produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> None:
        """Queue one record (the base class's hook; :meth:`publish` does the work)."""
        self.publish(topic, value, key=key, headers=headers)

    def publish_many(self, records: Iterable[Outgoing]) -> None:
        """Queue every record in order, exactly as :meth:`publish` would, in one loop.

        A batch's output costs one client call per record and no Python call around it;
        delivery reports are served once after the loop (a full queue is served as it
        fills, by :meth:`_queue_slowly`).
        """
        if self._closed:
            raise TransportClosedError("producer is closed")
        produce = self._producer.produce
        queued = 0
        for _, topic, key, value, headers in records:
            hdrs: Any = (
                (headers if headers.__class__ is list else list(headers)) if headers else None
            )
            try:
                produce(topic, value, key, headers=hdrs)
            except (BufferError, ck.KafkaException):  # nothing was queued
                if not self._queue_slowly(topic, value, key, hdrs):
                    continue
            queued += 1
        self._since_poll += queued
        if self._since_poll >= _POLL_EVERY:
            self._since_poll = 0
            self._serve_callbacks()

    def _queue_slowly(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any
    ) -> bool:
        """Queue a record the client refused at first; return False when it was rejected.

        A full local queue is waited out serving delivery reports (up to
        ``_QUEUE_FULL_LIMIT``); a rejected record is counted for the next flush, a fatal
        or out-of-transaction error raised.
        """
        producer = self._producer
        waited = 0.0
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                return True
            except BufferError:
                # The local queue is full: serve delivery reports until room frees up.
                if waited >= _QUEUE_FULL_LIMIT:
                    raise DeliveryError(
                        f"producer queue stayed full for {_QUEUE_FULL_LIMIT:.0f}s", retriable=True
                    ) from None
                try:
                    producer.poll(_QUEUE_FULL_WAIT)
                except ck.KafkaException as exc:  # a fatal error: the client is dead
                    self._failed_fatally = True
                    raise _transport_error(exc, "producer failed fatally") from exc
                waited += _QUEUE_FULL_WAIT
            except ck.KafkaException as exc:
                err = _error_of(exc)
                if err is not None and err.code() == ck.KafkaError._STATE and self.transactional:
                    raise TransactionError(
                        "transactional producer: call begin_transaction() before publish()"
                    ) from exc
                if err is not None and err.fatal():
                    raise _transport_error(exc, "producer failed fatally") from exc
                self._record_failure(topic, _describe(exc), bool(err and err.retriable()))
                return False

    def flush(self, timeout: float | None = None) -> None:
        """Wait for queued records; raise DeliveryError naming failures since the last flush.

        A client that failed fatally (fenced by a newer instance), whichever call met the
        error first, raises a fatal :class:`~choreo.errors.TransportError` (see
        :meth:`_flush_client` and :meth:`_serve_callbacks`), never a retriable one.
        """
        self._check_open()
        try:
            remaining = self._flush_client(timeout)
        except _FlushFailedError as exc:
            raise TransportError(f"producer failed fatally: {exc}", fatal=True) from exc.__cause__
        if self._failed_fatally:  # e.g. served by an earlier poll, which only remembers it
            self._reset_failures()
            raise TransportError(
                "producer failed fatally (fenced by a newer instance, or a fatal client "
                "error): its records are not delivered",
                fatal=True,
            )
        if remaining:
            raise DeliveryError(
                f"{remaining} record(s) still unacknowledged after {timeout}s", retriable=True
            )
        self._raise_failures()

    # --- transactions ----------------------------------------------------------------

    def _transaction_call(
        self, call: Callable[[], object], what: str, timeout: float | None = None
    ) -> None:
        """Run one transactional call, translating errors with their flags.

        With a ``timeout`` (the one the call itself was given) the call is bounded: one
        that outlives it by ``_TXN_CALL_GRACE`` seconds fails fatally (see
        :meth:`_bounded`). A fatal error (fenced, hung) marks the producer failed:
        :meth:`close` then releases it without flushing (a flush of a fenced producer only
        fails its records).
        """
        try:
            if timeout is None:
                call()
            else:
                self._bounded(call, what, timeout + _TXN_CALL_GRACE)
        except ck.KafkaException as exc:
            error = _transaction_error(exc, f"{what} failed")
            self._failed_fatally = self._failed_fatally or error.fatal
            raise error from exc

    def begin_transaction(self) -> None:
        """Begin a transaction (renewing a client that lost every broker first)."""
        self._check_transactional()
        self.renew_if_stale()
        self._transaction_call(self._producer.begin_transaction, "begin_transaction")

    def renew_if_stale(self) -> bool:
        """Replace the client if it lost every broker since it was created; return whether it did.

        Serves the callbacks queued while the producer was idle first: an outage is only
        known once its ``_ALL_BROKERS_DOWN`` error callback ran.
        """
        self._check_transactional()
        self._serve_callbacks()
        if self._renew is None:
            return False
        reason, self._renew = self._renew, None
        self._renew_client(reason)
        return True

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: Consumer, timeout: float = 30.0
    ) -> None:
        """Add the consumer group's offsets to the current transaction."""
        self._check_transactional()
        if not isinstance(consumer, ConfluentConsumer):
            raise TransactionError("offsets need a consumer of the confluent transport")
        metadata = consumer._client().consumer_group_metadata()
        self._transaction_call(
            lambda: self._producer.send_offsets_to_transaction(
                _to_offsets(offsets), metadata, timeout
            ),
            "send_offsets_to_transaction",
            timeout,
        )

    def _bounded(self, call: Callable[[], object], what: str, limit: float) -> None:
        """Run ``call`` on the producer's call thread; fail fatally past ``limit`` seconds.

        librdkafka's transactional calls may block past their own timeouts while a
        coordinator is unreachable (``send_offsets_to_transaction`` after a broker
        restart, librdkafka issue 5456). A worker stuck there would hold its store
        transaction, the business rows it locked and its partitions, for good: a fatal
        error ends it instead (its supervisor restarts it, and the new producer with the
        same transactional id fences this one and aborts its transaction).
        """
        if not self._caller.call(call, what, limit):
            self._failed_fatally = True
            raise TransactionError(
                f"{what} did not return within {limit:.0f} s although given a timeout "
                f"(librdkafka ignores it while a coordinator is unreachable; hung in "
                f"{self._caller.hung}): the producer is abandoned",
                hung=True,
            )

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Commit the current transaction (flushing its records first)."""
        self._check_transactional()
        self._transaction_call(
            lambda: self._producer.commit_transaction(timeout), "commit_transaction", timeout
        )

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Abort the current transaction; its records' delivery failures are forgotten."""
        self._check_transactional()
        try:
            self._transaction_call(
                lambda: self._producer.abort_transaction(timeout), "abort_transaction", timeout
            )
        finally:
            if self._caller.hung is None:
                self._serve_callbacks()
            self._reset_failures()

    def close(self) -> None:
        """Flush what is queued (best effort, bounded) and release the client (bounded).

        A producer with a call still hung is left alone (destroying a client another
        thread is inside of is unsafe; that thread keeps it referenced) once the
        transaction it left open is aborted (:meth:`_abort_by_fencing`); one that failed
        fatally is purged, not flushed; a close that outlives ``_CLOSE_LIMIT`` is
        abandoned with a warning, so a worker that must stop always does.
        """
        if self._closed:
            return
        self._closed = True
        self._caller.stop()
        if self._caller.hung is not None:
            logger.warning(
                "abandoning a producer hung in %s: its queued records are lost", self._caller.hung
            )
            self._abort_by_fencing()
            return
        if self._failed_fatally:
            # a transaction's records are never committed once it failed: nothing is lost
            queued = len(self._producer)
            lost = queued and self._transactional_id is None
            logger.log(
                logging.WARNING if lost else logging.DEBUG,  # the fatal error is said anyway
                "closing a producer that failed fatally: %d queued record(s) dropped",
                queued,
            )
            self._producer.purge()
            self._release()
            return
        try:
            remaining = self._flush_client(_CLOSE_FLUSH_TIMEOUT)
        except _FlushFailedError as exc:
            logger.warning("closing a producer that failed fatally: %s", exc)
            self._producer.purge()
            self._release()
            return
        if remaining or self._failures:
            logger.warning(
                "producer closed with %d record(s) unacknowledged and %d failed (first: %s)",
                remaining,
                self._failures,
                self._first_failure or "-",
            )
        self._release()

    def _abort_by_fencing(self) -> None:
        """Abort the transaction a hung client left open: a new client fences it (bounded).

        A client hung in a transactional call cannot end its own transaction, and an open
        transaction holds back the last stable offset of every partition it wrote to: every
        ``read_committed`` reader of those partitions waits until it ends. A new client with
        the same transactional id registering itself (InitProducerId) makes the coordinator
        bump the producer epoch and abort the open transaction at once, instead of when a
        replacement process starts or when ``transaction.timeout.ms`` expires. Best effort,
        at most ``_FENCE_LIMIT`` seconds; the new client is closed (or abandoned) after.
        Not done when a newer producer of this process has registered the id since (its
        registration aborted the transaction already, and a fencing client would fence it).
        """
        if self._transactional_id is None:
            return
        with _REGISTERED_LOCK:
            newer = _REGISTERED.get(self._transactional_id)
        if newer is not None and newer is not self:
            logger.info(
                "a newer producer of this process registered %s since: its registration "
                "aborted the hung producer's transaction (no fencing client needed)",
                self._transactional_id,
            )
            return
        settings = {k: v for k, v in self._settings.items() if k not in ("on_delivery", "error_cb")}
        started = time.monotonic()
        try:
            fresh = _create(ck.Producer, settings, "producer")
        except ConfigurationError as exc:
            logger.warning("could not abort the hung producer's transaction: %s", exc)
            return
        try:
            done = run_bounded(
                lambda: fresh.init_transactions(_FENCE_LIMIT), "producer-fence", _FENCE_LIMIT
            )
        except ck.KafkaException as exc:
            logger.warning("could not abort the hung producer's transaction: %s", _describe(exc))
            done = False
        if done:
            logger.warning(
                "aborted the transaction the hung producer left open (fenced it in %.1f s)",
                time.monotonic() - started,
            )
        else:
            logger.warning(
                "the broker aborts the hung producer's transaction when a replacement starts "
                "or after transaction.timeout.ms"
            )
        # Closed on a thread of its own, never waited for: its destruction could block.
        run_bounded(fresh.close, "producer-close", 0)

    def _release(self) -> None:
        """Close the librdkafka client, abandoning it when that outlives ``_CLOSE_LIMIT``.

        The close of a fenced client raises its fatal error again: that is logged, not raised.
        """
        _close_bounded(self._producer.close, "producer", "a broker", logging.DEBUG)


def _lacks_value(headers: list[tuple[str, bytes]]) -> bool:
    """Return whether any of ``headers`` (every header of a batch, in one list) has no value.

    Foreign producers may write a header with a null value (librdkafka gives ``None``).
    ``all()`` over every value of the batch is the cheap test (one pass at C level); only
    a falsy value, ``b""`` or ``None``, needs the exact one.
    """
    return not all(map(_VALUE_OF, headers)) and None in map(_VALUE_OF, headers)


def _fill_absent(record: Record) -> Record:
    """Return ``record``, or a copy whose headers without value have ``b""`` instead."""
    headers = record.headers
    if None not in map(_VALUE_OF, headers):
        return record
    filled = tuple((k, v if v is not None else b"") for k, v in headers)
    return make_record(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        filled,
        record.timestamp_ms,
    )


class ConfluentConsumer(ConsumerBase[ck.Consumer]):
    """A confluent-kafka consumer-group member; see the module docstring."""

    def __init__(
        self,
        config: KafkaConfig,
        group_id: str,
        *,
        from_beginning: bool = True,
        instance_id: str | None = None,
        admin: Callable[[], AdminClient] | None = None,
    ) -> None:
        settings: dict[str, Any] = dict(_CONSUMER_EXTRAS)
        settings.update(
            config.consumer_settings(
                group_id, from_beginning=from_beginning, instance_id=instance_id
            )
        )
        super().__init__(_create(ck.Consumer, settings, "consumer"))
        self._cooperative = "cooperative" in str(settings.get("partition.assignment.strategy", ""))
        self._config = config
        self._group_id = group_id
        self._instance_id = instance_id
        self._pending_seeks: dict[TopicPartition, int] | None = None
        self._revoked_in_poll: set[TopicPartition] = set()
        self._admin = admin
        self._isolation = _isolation_of(settings)

    def _subscribe(self, client: ck.Consumer, topics: Sequence[str]) -> None:
        """Subscribe with callbacks that run on_assign/on_revoke and (un)assign."""
        try:
            client.subscribe(
                list(topics),
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._revoked,
            )
        except ck.KafkaException as exc:
            raise _transport_error(exc, "subscribe failed") from exc

    def _assigned(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        """Run the user's on_assign, then assign with any offsets it asked to seek to."""
        assigned = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._pending_seeks = {}
        try:
            if self._on_assign is not None:
                self._on_assign(assigned)
        finally:
            seeks, self._pending_seeks = self._pending_seeks, None
        for p in partitions:
            offset = seeks.get(TopicPartition(p.topic, p.partition))
            if offset is not None:
                p.offset = offset
        if self._cooperative:
            client.incremental_assign(partitions)
        else:
            client.assign(partitions)

    def _revoked(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        """Run the user's on_revoke for a non-empty revocation, then resume and unassign.

        A pause ends with the assignment (the transports' contract): librdkafka would keep
        it, and a partition assigned again later (a worker's backoff spanning a rebalance,
        e.g. after a broker restart) would stay paused for good, its records never read.
        """
        revoked = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._revoked_in_poll.update(revoked)
        try:
            if revoked and self._on_revoke is not None:
                self._on_revoke(revoked)
        finally:
            if partitions:
                try:
                    client.resume(partitions)
                except ck.KafkaException as exc:
                    logger.debug("resuming revoked partitions: %s", _describe(exc))
            if self._cooperative:
                client.incremental_unassign(partitions)
            else:
                client.unassign()

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout`` for the first.

        librdkafka's ``consume(n, timeout)`` waits until ``n`` messages are there *or* the
        timeout passed, so at low load every hop would wait the whole timeout. Instead take
        what is already fetched without waiting, and when nothing is, wait for one message
        with ``poll(timeout)`` and then take the rest of its batch without waiting.

        A rebalance served by that second ``consume`` may revoke the partition of the
        message the ``poll`` returned: that message is then dropped (its partition's new
        owner reads it), so no record of a revoked partition is ever returned. (Within
        one client call librdkafka itself discards messages fetched before a revocation.)
        """
        client = self._client()
        revoked = self._revoked_in_poll
        try:
            messages = client.consume(max_records, 0)
            if not messages and timeout > 0:
                first = client.poll(timeout)
                if first is not None:
                    revoked.clear()
                    rest = client.consume(max_records - 1, 0) if max_records > 1 else []
                    if revoked and (first.topic(), first.partition()) in revoked:
                        messages = rest
                    else:
                        messages = [first, *rest]
        except ck.KafkaException as exc:
            raise _transport_error(exc, "consume failed") from exc
        return self._records(messages)

    def _records(self, messages: list[ck.Message]) -> list[Record]:
        """Return the :class:`Record` of each message without error (see :func:`_fill_absent`).

        Each record is a ``RECORD_SHELL`` filled in place and made a ``Record`` (what
        :data:`~choreo.transports.base.make_record` builds, without a call per message);
        whether any header of the batch lacks a value is one C-level test over all of them.
        """
        shell_class = RECORD_SHELL
        if shell_class is None:  # pragma: no cover - Record's layout changed
            return self._records_by_constructor(messages)
        record_class = Record
        records: list[Record] = []
        append = records.append
        batch_headers: list[tuple[str, bytes]] = []  # every header of the batch
        keep = batch_headers.extend
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            raw = msg.headers()
            # A message without error always has a topic, partition and offset.
            shell = shell_class()
            shell.topic = msg.topic()  # type: ignore[assignment]
            shell.partition = msg.partition()  # type: ignore[assignment]
            shell.offset = msg.offset()  # type: ignore[assignment]
            shell.key = msg.key()
            shell.value = msg.value()
            if raw:
                shell.headers = tuple(raw)  # type: ignore[arg-type]  # a list of (str, bytes)
                keep(raw)  # type: ignore[arg-type]
            else:
                shell.headers = ()
            shell.timestamp_ms = msg.timestamp()[1]
            shell.__class__ = record_class  # type: ignore[assignment]
            append(shell)  # type: ignore[arg-type]
        if batch_headers and _lacks_value(batch_headers):
            return [_fill_absent(record) for record in records]
        return records

    def _records_by_constructor(self, messages: list[ck.Message]) -> list[Record]:
        """Return the records of ``messages`` built with ``make_record`` (the fallback)."""
        records: list[Record] = []  # pragma: no cover - only if Record's layout changed
        for msg in messages:  # pragma: no cover
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            raw: Any = msg.headers()
            record = make_record(
                msg.topic(),  # type: ignore[arg-type]
                msg.partition(),  # type: ignore[arg-type]
                msg.offset(),  # type: ignore[arg-type]
                msg.key(),
                msg.value(),
                tuple(raw) if raw else (),
                msg.timestamp()[1],
            )
            records.append(_fill_absent(record))
        return records  # pragma: no cover

    @staticmethod
    def _on_error(err: ck.KafkaError) -> None:
        """Skip end-of-partition events, raise lasting errors, log the transient rest."""
        code = err.code()
        if code == ck.KafkaError._PARTITION_EOF:
            return
        if err.fatal() or code in _RAISED_CONSUMER_ERRORS:
            raise TransportError(
                f"consumer error: {_fatal_text(err)}", retriable=False, fatal=True
            )
        logger.warning("consumer error %s: %s", err.name(), err.str())

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronously commit offsets (each the next offset to read) for the group."""
        client = self._client()
        if not offsets:
            return
        try:
            result = client.commit(offsets=_to_offsets(offsets), asynchronous=False)
        except ck.KafkaException as exc:
            err = _error_of(exc)
            raise CommitError(
                f"commit failed: {_describe(exc)}", retriable=bool(err and err.retriable())
            ) from exc
        failed = [(p, p.error) for p in result or () if p.error is not None]
        if failed:
            first, error = failed[0]
            raise CommitError(
                f"commit failed for {len(failed)} partition(s); first {first.topic}"
                f"[{first.partition}]: {error.str()}",
                retriable=error.retriable(),
            )

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next poll of an assigned ``partition`` start at ``offset``."""
        client = self._client()
        if self._pending_seeks is not None:
            # Inside on_assign the partition is not assigned yet: assign at the offset.
            self._pending_seeks[partition] = offset
            return
        try:
            client.seek(ck.TopicPartition(partition.topic, partition.partition, offset))
        except ck.KafkaException as exc:
            raise _transport_error(exc, f"cannot seek {partition} to {offset}") from exc

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop fetching from assigned ``partitions`` until :meth:`resume`."""
        client = self._client()
        try:
            client.pause([ck.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        except ck.KafkaException as exc:
            raise _transport_error(exc, f"cannot pause {list(partitions)}") from exc

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch from paused ``partitions`` again."""
        client = self._client()
        try:
            client.resume([ck.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        except ck.KafkaException as exc:
            raise _transport_error(exc, f"cannot resume {list(partitions)}") from exc

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions currently assigned to this consumer."""
        client = self._client()
        try:
            return [TopicPartition(p.topic, p.partition) for p in client.assignment()]
        except ck.KafkaException as exc:
            raise _transport_error(exc, "assignment failed") from exc

    def _leave_group(self) -> None:
        """Remove this static member from its group, so the others take its partitions now."""
        if self._instance_id is None:
            return
        try:  # the admin call that does it comes from kafka-python
            from choreo.transports.membership import remove_static_member
        except ImportError:
            logger.warning(
                "static member %s keeps its partitions until its session times out: removing "
                "it at once needs kafka-python (pip install 'choreo[kafka-python]')",
                self._instance_id,
            )
            return
        config, group, instance = self._config, self._group_id, self._instance_id
        if not run_bounded(
            lambda: remove_static_member(config, group, instance), "leave-group", _CLOSE_LIMIT
        ):
            logger.warning(
                "static member %s not removed from group %s within %.0f s: its partitions "
                "move after the session timeout",
                instance,
                group,
                _CLOSE_LIMIT,
            )

    def high_watermarks(
        self, partitions: Sequence[TopicPartition], timeout: float = 2.0
    ) -> dict[TopicPartition, int]:
        """Return the end of each partition, asked of the brokers in one bounded call.

        The end is the offset a ``read_committed`` consumer (choreo's default) stops
        before: the last stable offset, below the first record of a transaction still
        open, or the high watermark (the offset the next record will get) when none is;
        with ``isolation.level=read_uncommitted`` in the consumer settings, the high
        watermark. These are the ends librdkafka's per-partition watermark query gives
        this consumer. All partitions are asked together (the admin client's
        ``list_offsets``: one ListOffsets request per partition leader), the whole call
        bounded by ``timeout`` seconds however many partitions there are; a partition
        whose end is not known by then (or whose leader answered with an error) is left
        out. Used by catch-up reads (:mod:`choreo.transports.catchup`) and consumer lag
        (:mod:`choreo.observability.metrics`).
        """
        self._client()  # raises for a closed consumer, as the other calls do
        wanted = {ck.TopicPartition(tp.topic, tp.partition): _LATEST for tp in partitions}
        if not wanted:
            return {}
        try:
            futures = self._admin_client().list_offsets(
                wanted, isolation_level=self._isolation, request_timeout=max(timeout, 0.001)
            )
        except (ck.KafkaException, ValueError, TypeError) as exc:
            logger.debug("no end offsets: %s", _describe(exc))
            return {}
        concurrent.futures.wait(futures.values(), timeout=max(timeout, 0.0))
        return _ends_of(futures)

    def _admin_client(self) -> AdminClient:
        """Return the admin client the ends are asked with: the transport's, or one of its own."""
        if self._admin is None:
            admin = _create(AdminClient, self._config.common_settings(), "admin")
            self._admin = lambda: admin
        return self._admin()

    def positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return the position (next offset to read) of each partition the client has one for.

        Used by catch-up reads (:mod:`choreo.transports.catchup`): a local call, no request.
        """
        wanted = [ck.TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            found = self._client().position(wanted)
        except ck.KafkaException as exc:
            logger.debug("no positions: %s", _describe(exc))
            return {}
        return {TopicPartition(p.topic, p.partition): p.offset for p in found if p.offset >= 0}

    def _close_client(self) -> None:
        """Close the client (a dynamic member leaves the group), logging any error.

        Bounded: librdkafka's close can wait for good on a coordinator it cannot reach
        (after a broker restart); past ``_CLOSE_LIMIT`` the client is abandoned, so a
        worker that must stop (a fatal error) exits and its supervisor restarts it. The
        admin client the consumer created for its ends (when no transport lent it one)
        is dropped with it: it holds threads and a connection to every broker.
        """
        try:
            _close_bounded(
                self._consumer.close, "consumer", "its group coordinator", logging.WARNING
            )
        finally:
            self._admin = None  # an admin client of its own is released with the consumer


class ConfluentTransport:
    """The transport for one Kafka cluster through confluent-kafka."""

    name = "confluent"

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._admin: AdminClient | None = None

    def producer(self, *, transactional_id: str | None = None) -> ConfluentProducer:
        """Return a new idempotent producer (transactional when ``transactional_id`` is given)."""
        return ConfluentProducer(self.config, transactional_id)

    def consumer(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> ConfluentConsumer:
        """Return a new consumer in ``group_id``; static (``group.instance.id``) with an id."""
        require_group_id(group_id)
        return ConfluentConsumer(
            self.config,
            group_id,
            from_beginning=from_beginning,
            instance_id=instance_id,
            admin=self._admin_client,
        )

    def _admin_client(self) -> AdminClient:
        """Return the admin client, created on first use."""
        if self._admin is None:
            self._admin = _create(AdminClient, self.config.common_settings(), "admin")
        return self._admin

    def create_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int = 1,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
    ) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are).

        Replication as :meth:`Transport.create_topics <choreo.transports.base.Transport.
        create_topics>` says: checked against the cluster's live brokers first.
        """
        if not topics:
            return
        check_replication(replication_factor, min_insync_replicas)
        self._check_brokers(topics, replication_factor, min_insync_replicas)
        configs = replication_configs(min_insync_replicas)
        factor = -1 if replication_factor is None else replication_factor
        new = [
            NewTopic(name, num_partitions=partitions, replication_factor=factor, config=configs)
            for name in topics
        ]
        futures = self._admin_client().create_topics(new, operation_timeout=_ADMIN_TIMEOUT)
        existing: list[str] = []
        for name, future in futures.items():
            try:
                future.result(timeout=_ADMIN_TIMEOUT)
            except ck.KafkaException as exc:
                err = _error_of(exc)
                if err is not None and err.code() == ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    existing.append(name)
                    continue
                if err is not None and err.code() == ck.KafkaError.INVALID_REPLICATION_FACTOR:
                    raise ConfigurationError(f"cannot create topic {name!r}: {err.str()}") from None
                raise _transport_error(exc, f"cannot create topic {name!r}") from exc
        self._wait_for_metadata(topics)
        self._check_existing(existing, replication_factor, min_insync_replicas)

    def _check_existing(
        self, topics: Sequence[str], replication_factor: int | None, min_insync: int | None
    ) -> None:
        """Warn about existing ``topics`` with less replication than asked (one line each)."""
        admin = self._admin_client()
        check_existing(
            lambda: read_confluent(admin, topics, _ADMIN_TIMEOUT),
            topics,
            replication_factor,
            min_insync,
        )

    def _check_brokers(
        self, topics: Sequence[str], replication_factor: int | None, min_insync: int | None
    ) -> None:
        """Refuse (ConfigurationError) a replication the live brokers cannot hold, when one
        of ``topics`` is to be created with it.

        With every topic there nothing is created and nothing is refused: a broker down
        (a rolling restart of the cluster) must not stop a replica's restart; the
        existing topics are compared with what was asked afterwards, as always.
        """
        if replication_factor is None and min_insync is None:
            return
        try:
            metadata = self._admin_client().list_topics(timeout=_ADMIN_TIMEOUT)
        except ck.KafkaException as exc:
            raise _transport_error(exc, "cannot read the cluster's brokers") from exc
        if all(topic in metadata.topics for topic in topics):
            return
        check_brokers(len(metadata.brokers), replication_factor, min_insync)

    def _wait_for_metadata(self, topics: Sequence[str]) -> None:
        """Wait until every partition of ``topics`` is online on its leader (or 30 s passed).

        Creation is asynchronous, and producing to a partition its leader does not serve
        yet can lose records without an error on brokers before Kafka 4.5 (see
        :mod:`choreo.transports.readiness`); topics still not online after the wait are
        named in a warning.
        """
        late = wait_until_online(self._admin_client(), topics, _ADMIN_TIMEOUT)
        if late:
            logger.warning(
                "topic(s) %s not online on their leaders within %.0f s: records produced "
                "to them now may be lost by a broker before Kafka 4.5 (KAFKA-15591)",
                ", ".join(late[:10]) + (f" and {len(late) - 10} more" if len(late) > 10 else ""),
                _ADMIN_TIMEOUT,
            )

    def list_topics(self) -> list[str]:
        """Return the names of the topics that exist (internal ``__`` topics excluded)."""
        try:
            metadata = self._admin_client().list_topics(timeout=_ADMIN_TIMEOUT)
        except ck.KafkaException as exc:
            raise _transport_error(exc, "cannot list topics") from exc
        return sorted(name for name in metadata.topics if not name.startswith("__"))

    def close(self) -> None:
        """Release the admin client (producers and consumers are closed by their owners)."""
        self._admin = None
