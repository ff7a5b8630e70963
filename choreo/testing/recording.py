"""A transport wrapper that records every record its producers publish, once delivered.

:class:`RecordingTransport` wraps any transport; its producers forward to the inner
ones and append each record to one list when its delivery is confirmed (a flush, or the
commit of its transaction), numbered in that order (the record's ``offset`` in the log,
see :class:`~choreo.testing.records.PublishedRecord`). The producer of a transactional
id is transactional only if the inner transport's is
(:func:`~choreo.transports.base.supports_transactions`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from choreo.testing.records import PublishedRecord
from choreo.transports.base import (
    Consumer,
    Headers,
    Producer,
    TopicPartition,
    TransactionalProducer,
    Transport,
    supports_transactions,
)

__all__ = ["RecordLog", "RecordingTransport"]


Pending = tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]
"""A record published but not yet confirmed: topic, key, value, headers."""


class RecordLog:
    """The list published records are appended to, each numbered by its position."""

    def __init__(self, records: list[PublishedRecord]) -> None:
        self.records = records
        self._lock = threading.Lock()

    def extend(self, pending: list[Pending]) -> None:
        """Append confirmed records, numbering them in order (thread-safe)."""
        with self._lock:
            start = len(self.records)
            self.records.extend(
                PublishedRecord(topic, 0, start + index, key, value, headers)
                for index, (topic, key, value, headers) in enumerate(pending)
            )


class _RecordingProducer:
    """A producer that records what it publishes once delivery is confirmed."""

    def __init__(self, inner: Producer, sink: RecordLog) -> None:
        self._inner = inner
        self._sink = sink
        self._queued: list[Pending] = []

    def publish(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        """Publish through the wrapped producer and remember the record."""
        self._inner.publish(topic, value, key=key, headers=headers)
        self._queued.append((topic, key, value, tuple(headers)))

    def flush(self, timeout: float | None = None) -> None:
        """Flush; the records published since the last flush count as published."""
        try:
            self._inner.flush(timeout)
        finally:
            self._sink.extend(self._queued)
            self._queued = []

    def close(self) -> None:
        """Close the wrapped producer."""
        self._inner.close()


class _RecordingTransactionalProducer(_RecordingProducer):
    """A recording producer whose records count as published when their transaction commits."""

    def __init__(self, inner: TransactionalProducer, sink: RecordLog) -> None:
        super().__init__(inner, sink)
        self._transactional = inner

    @property
    def transactional(self) -> bool:
        """True: the wrapped producer is transactional."""
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Flush the wrapped producer; records count at commit, not here."""
        self._inner.flush(timeout)

    def begin_transaction(self) -> None:
        """Begin a transaction on the wrapped producer."""
        self._transactional.begin_transaction()
        self._queued = []

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: Consumer, timeout: float = 30.0
    ) -> None:
        """Forward the offsets to the wrapped producer's transaction."""
        self._transactional.send_offsets_to_transaction(offsets, consumer, timeout)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Commit; the transaction's records count as published."""
        self._transactional.commit_transaction(timeout)
        self._sink.extend(self._queued)
        self._queued = []

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Abort; the transaction's records are forgotten."""
        self._queued = []
        self._transactional.abort_transaction(timeout)


class RecordingTransport:
    """A transport whose producers record every published record into one list, numbered."""

    def __init__(self, inner: Transport, sink: list[PublishedRecord]) -> None:
        self.inner = inner
        self.name = inner.name
        self._sink = RecordLog(sink)

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        """Return a recording producer around the inner transport's."""
        inner = self.inner.producer(transactional_id=transactional_id)
        if isinstance(inner, TransactionalProducer) and supports_transactions(inner):
            return _RecordingTransactionalProducer(inner, self._sink)
        return _RecordingProducer(inner, self._sink)

    def consumer(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> Consumer:
        """Return the inner transport's consumer."""
        return self.inner.consumer(group_id, from_beginning=from_beginning, instance_id=instance_id)

    def create_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int = 1,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
    ) -> None:
        """Create topics on the inner transport."""
        self.inner.create_topics(
            topics,
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
        )

    def list_topics(self) -> list[str]:
        """List the inner transport's topics."""
        return self.inner.list_topics()
