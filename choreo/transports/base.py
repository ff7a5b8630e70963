"""The transport boundary: move bytes and headers to and from topics, nothing else.

A transport knows nothing about Avro, envelopes or sagas. It offers a producer
(publish, flush, transactions where the client supports them), a consumer (subscribe,
poll, commit, seek, close) and a little administration (create topics). Each
implementation translates its client's exceptions into :mod:`choreo.errors` here, at
the boundary; nothing above it imports a Kafka client.

Offsets follow Kafka's convention everywhere: a committed offset is the offset of the
*next* record to read (last handled offset + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "Consumer",
    "Headers",
    "Producer",
    "RebalanceCallback",
    "Record",
    "TopicPartition",
    "Transport",
]

Headers = Sequence[tuple[str, bytes]]
"""Record headers as (name, value) pairs; values are bytes (choreo writes UTF-8)."""


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record: where it came from, its key, value and headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = -1

    @property
    def topic_partition(self) -> TopicPartition:
        """Return the partition this record was read from."""
        return TopicPartition(self.topic, self.partition)


RebalanceCallback = Callable[[list[TopicPartition]], None]
"""Called with the partitions assigned to (or revoked from) a consumer."""


@runtime_checkable
class Producer(Protocol):
    """Publishes records; delivery is confirmed by :meth:`flush`, never per record."""

    @property
    def transactional(self) -> bool:
        """True when this producer was created with a transactional id."""
        ...

    def publish(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        """Queue one record for delivery; never waits for the broker's acknowledgement."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is acknowledged.

        Raises :class:`~choreo.errors.DeliveryError` if any record published since the
        last flush was not delivered (the error names how many and why).
        """
        ...

    def begin_transaction(self) -> None:
        """Begin a transaction (transactional producers only)."""
        ...

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: Consumer, timeout: float = 30.0
    ) -> None:
        """Add the consumer's offsets to the current transaction."""
        ...

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Commit the current transaction."""
        ...

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Abort the current transaction."""
        ...

    def close(self) -> None:
        """Flush what is queued (best effort) and release the client."""
        ...


@runtime_checkable
class Consumer(Protocol):
    """Reads records of subscribed topics as a member of a consumer group."""

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Subscribe to topics; a name starting with ``^`` is a regular expression."""
        ...

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout`` seconds."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronously commit offsets (each the next offset to read) for the group."""
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next poll of ``partition`` start at ``offset``."""
        ...

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions currently assigned to this consumer."""
        ...

    def close(self) -> None:
        """Leave the group and release the client (does not commit).

        A static member (created with an ``instance_id``) releases the client without
        leaving the group, so its replacement gets the same partitions back.
        """
        ...


@runtime_checkable
class Transport(Protocol):
    """A factory of producers and consumers for one cluster (or one memory bus)."""

    name: str

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        """Return a new producer; idempotent, ``acks=all`` on Kafka."""
        ...

    def consumer(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> Consumer:
        """Return a new consumer in ``group_id`` (no auto-commit, ``read_committed``).

        ``from_beginning`` decides where a group with no committed offset starts.
        ``instance_id`` makes the consumer a static member of the group (Kafka's
        ``group.instance.id``): closing it does not leave the group, and a new consumer
        with the same instance id takes its partitions back without a rebalance, as
        long as it joins within the session timeout. Instance ids must be unique
        within the group.
        """
        ...

    def create_topics(self, topics: Sequence[str], *, partitions: int = 1) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are)."""
        ...

    def list_topics(self) -> list[str]:
        """Return the names of the topics that exist."""
        ...
