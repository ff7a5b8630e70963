"""The confluent transport's producer (see :mod:`choreo.transports.confluent`)."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import confluent_kafka as ck

from choreo.errors import (
    ConfigurationError,
    DeliveryError,
    TransactionError,
    TransportClosedError,
    TransportError,
)
from choreo.transports.base import (
    Consumer,
    Headers,
    Outgoing,
    TopicPartition,
)
from choreo.transports.bounded import BoundedCaller, run_bounded
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent.client import (
    _ADMIN_TIMEOUT,
    _CLOSE_FLUSH_TIMEOUT,
    _FENCE_LIMIT,
    _POLL_EVERY,
    _PRODUCER_EXTRAS,
    _QUEUE_FULL_LIMIT,
    _QUEUE_FULL_WAIT,
    _TXN_CALL_GRACE,
    _close_bounded,
    _create,
    _describe,
    _error_of,
    _to_offsets,
    _transaction_error,
    _transport_error,
)
from choreo.transports.confluent.consumer import ConfluentConsumer
from choreo.transports.shared import ProducerBase

logger = logging.getLogger(__name__)

__all__ = ["ConfluentProducer"]

_REGISTERED: Final[weakref.WeakValueDictionary[tuple[str, str], ConfluentProducer]] = (
    weakref.WeakValueDictionary()
)
"""The producer of this process that last registered each (bootstrap servers,
transactional id): closing an older one that hung must not fence it (see
:meth:`ConfluentProducer._abort_by_fencing`)."""
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

    def _registration_key(self) -> tuple[str, str]:
        """Return what identifies this producer's registration: its cluster and its id."""
        return str(self._settings.get("bootstrap.servers", "")), str(self._transactional_id)

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
            _REGISTERED[self._registration_key()] = self
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
            newer = _REGISTERED.get(self._registration_key())
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
