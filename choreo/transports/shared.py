"""What every transport shares: open/closed checks, failure counting, argument checks.

The base classes a transport subclasses (see :mod:`choreo.transports.base` for the
methods it then implements). :class:`ProducerBase` holds a producer's transactional id,
its closed flag and the records that failed since the last flush, and reports them as
one :class:`~choreo.errors.DeliveryError`. :class:`ConsumerBase` holds a consumer's
client, its rebalance callbacks and its closing flags. :func:`require_group_id` and
:func:`check_instance_id` check a consumer's arguments. Nothing here imports a Kafka
client: each transport supplies the client calls (``_produce``, ``_subscribe``,
``_close_client``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from choreo.errors import ConfigurationError, DeliveryError, TransactionError, TransportClosedError
from choreo.transports.base import Headers, Outgoing, Producer, RebalanceCallback

__all__ = [
    "ConsumerBase",
    "ProducerBase",
    "check_instance_id",
    "publish_records",
    "require_group_id",
]

ClientT = TypeVar("ClientT")


def publish_records(producer: Producer, records: Iterable[Outgoing]) -> None:
    """Queue ``records`` in order on ``producer``: as :meth:`Producer.publish` would each.

    choreo's own producers take the batch in one call (:meth:`ProducerBase.publish_many`);
    any other :class:`~choreo.transports.base.Producer` gets one ``publish`` per record.
    """
    if isinstance(producer, ProducerBase):
        producer.publish_many(records)
        return
    publish = producer.publish
    for _, topic, key, value, headers in records:
        publish(topic, value, key=key, headers=headers)


def require_group_id(group_id: str) -> None:
    """Raise ConfigurationError unless ``group_id`` names a group."""
    if not group_id:
        raise ConfigurationError("a consumer needs a group id")


def check_instance_id(instance_id: str | None) -> None:
    """Raise ConfigurationError for an empty static-membership instance id (None is fine)."""
    if instance_id is not None and not instance_id:
        raise ConfigurationError("instance_id must not be empty")


class ProducerBase:
    """A producer's shared state: its transactional id, whether it is closed, its failures.

    A subclass queues records in :meth:`_produce`; :meth:`publish` checks the producer is
    open first. Failures recorded with :meth:`_record_failure` are raised by
    :meth:`_raise_failures` (called from ``flush``).
    """

    def __init__(self, transactional_id: str | None) -> None:
        self._transactional_id = transactional_id
        self._closed = False
        self._failures = 0
        self._first_failure = ""
        self._first_retriable = False

    @property
    def transactional(self) -> bool:
        """True when this producer was created with a transactional id."""
        return self._transactional_id is not None

    def publish(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        """Queue one record; a record the client rejects is reported by the next flush."""
        if self._closed:
            raise TransportClosedError("producer is closed")
        self._produce(topic, value, key, headers)

    def _produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> None:
        """Queue one record on the client (the producer is open)."""
        raise NotImplementedError

    def publish_many(self, records: Iterable[Outgoing]) -> None:
        """Queue every record in order, as :meth:`publish` each (a transport may do it faster)."""
        publish = self.publish
        for _, topic, key, value, headers in records:
            publish(topic, value, key=key, headers=headers)

    def _check_open(self) -> None:
        """Raise TransportClosedError after ``close``."""
        if self._closed:
            raise TransportClosedError("producer is closed")

    def _check_transactional(self) -> None:
        """Raise unless this producer is open and transactional."""
        self._check_open()
        if self._transactional_id is None:
            raise TransactionError("producer has no transactional id")

    def _record_failure(self, topic: str, reason: str, retriable: bool) -> None:
        """Remember a failed record so the next flush reports it."""
        self._failures += 1
        if self._failures == 1:
            self._first_failure = f"{topic}: {reason}"
            self._first_retriable = retriable

    def _reset_failures(self) -> None:
        """Forget the failures counted so far."""
        self._failures, self._first_failure, self._first_retriable = 0, "", False

    def flush(self, timeout: float | None = None) -> None:
        """Raise DeliveryError if a record published since the last flush failed.

        Enough for a transport whose ``_produce`` completes synchronously; a client with
        a send queue overrides it to wait for the queue first.
        """
        self._check_open()
        self._raise_failures()

    def _raise_failures(self) -> None:
        """Raise one DeliveryError for the failures counted so far and forget them; or return."""
        if self._failures:
            count, first, retriable = self._failures, self._first_failure, self._first_retriable
            self._reset_failures()
            raise DeliveryError(
                f"{count} record(s) not delivered; first failure: {first}", retriable=retriable
            )


class ConsumerBase(Generic[ClientT]):
    """A consumer's shared state: its client, its rebalance callbacks, its closing flags.

    A subclass subscribes the client in :meth:`_subscribe` and releases it in
    :meth:`_close_client`; :meth:`close` makes sure that happens once.
    """

    def __init__(self, client: ClientT) -> None:
        self._consumer = client
        self._closing = False
        self._closed = False
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None

    def _check_open(self) -> None:
        """Raise TransportClosedError after ``close``."""
        if self._closed:
            raise TransportClosedError("consumer is closed")

    def _client(self) -> ClientT:
        """Return the underlying client, or raise TransportClosedError after close."""
        if self._closed:
            raise TransportClosedError("consumer is closed")
        return self._consumer

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Subscribe to topics (``^`` starts a regular expression); replaces the subscription."""
        client = self._client()
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._subscribe(client, topics)

    def _subscribe(self, client: ClientT, topics: Sequence[str]) -> None:
        """Subscribe the client to ``topics`` with this consumer's rebalance handling."""
        raise NotImplementedError

    def close(self, *, leave_group: bool = False) -> None:
        """Release the client once (on_revoke runs first); never commits.

        A dynamic member leaves the group; a static one (created with an instance id)
        does not, so a replacement with the same instance id gets its partitions back,
        unless ``leave_group`` is True: then it is removed from the group right after
        (:meth:`_leave_group`), and the other members get its partitions at once.
        """
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            self._close_client()
        finally:
            self._closed = True
        if leave_group:
            self._leave_group()

    def _leave_group(self) -> None:
        """Remove this static member from its group (the client is closed); default: no-op.

        A dynamic member left when its client closed. A Kafka transport removes a static
        member through the group coordinator (see :mod:`choreo.transports.membership`).
        """

    def _close_client(self) -> None:
        """Close the client, logging (not raising) what goes wrong."""
        raise NotImplementedError
