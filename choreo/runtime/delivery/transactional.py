"""Transactional delivery: a batch's output and its offsets in one Kafka transaction.

The flush and offset commit of :class:`~choreo.runtime.delivery.at_least_once.AtLeastOnce`
are replaced by one Kafka transaction {publish the output, send the offsets, commit}.
When the transaction fails the producer is recreated (or the transaction aborted when
the client says it is abortable), the consumer is rewound to the batch's first offsets,
and the outbox is published again with the next batch.
"""

from __future__ import annotations

from choreo.errors import ConfigurationError, TransactionError, TransportError
from choreo.runtime.delivery.at_least_once import AtLeastOnce
from choreo.runtime.delivery.base import Offsets
from choreo.transports.base import (
    Producer,
    TopicPartition,
    TransactionalProducer,
    supports_transactions,
)

__all__ = ["Transactional"]


class Transactional(AtLeastOnce):
    """Publishes each batch's output and commits its offsets in one Kafka transaction."""

    def _new_producer(self) -> Producer:
        """Return a transactional producer with the worker's transactional id."""
        producer = self.transport.producer(
            transactional_id=self.config.transactional_id_for(self.service)
        )
        if not supports_transactions(producer):
            producer.close()
            raise ConfigurationError(
                f"the {self.transport.name} transport has no transactions: "
                "exactly-once needs a transport whose producers support them"
            )
        return producer

    @property
    def transactional_producer(self) -> TransactionalProducer:
        """Return the producer as the transactional producer it was checked to be."""
        producer = self.producer
        assert isinstance(producer, TransactionalProducer)
        return producer

    def _send(self, offsets: Offsets, first: Offsets) -> None:
        """Run one Kafka transaction {publish pending, send offsets, commit}."""
        if not self._pending and not offsets:
            return
        producer = self.transactional_producer
        link = self.link
        timeout = self.config.transaction_timeout
        pending = self._pending
        try:
            producer.begin_transaction()
            publish = producer.publish
            for _, topic, key, value, headers in pending:
                publish(topic, value, key=key, headers=headers)
            if offsets:
                producer.send_offsets_to_transaction(offsets, link.consumer, timeout)
            producer.commit_transaction(timeout)
        except TransportError as exc:
            self._recover(exc)
            link.rewind(first)
            raise
        self._sent.extend([r[0] for r in pending])
        self._pending = []

    def _recover(self, exc: TransportError) -> None:
        """Abort an abortable transaction; otherwise (timeout, fatal) recreate the producer."""
        log = self.link.log
        abortable = isinstance(exc, TransactionError) and exc.abortable and not exc.fatal
        if abortable and not exc.retriable:
            log.warning("transaction failed, aborting it: %s", exc)
            try:
                self.transactional_producer.abort_transaction(self.config.transaction_timeout)
                return
            except TransportError as abort_error:
                log.warning("abort failed, recreating the producer: %s", abort_error)
        else:
            log.warning("transaction failed, recreating the producer: %s", exc)
        if self._producer is not None:
            try:
                self._producer.close()
            except TransportError as close_error:
                log.debug("closing the failed producer: %s", close_error)
        self._producer = self._new_producer()

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Do nothing: each transaction carries its own offsets."""
