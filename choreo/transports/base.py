"""The transport boundary: move bytes and headers to and from topics, nothing else.

A transport knows nothing about Avro, envelopes or sagas. It offers a :class:`Producer`
(publish, flush, close), a :class:`Consumer` (subscribe, poll, commit, seek, pause and
resume, assignment, close) and a little administration (create and list topics): the
:class:`Transport` factory. Transactions are a separate, optional capability: a producer
that supports them is also a :class:`TransactionalProducer` (check with
:func:`supports_transactions`). Each implementation translates its client's exceptions
into :mod:`choreo.errors` at the boundary; nothing above it imports a Kafka client.

Writing a transport: subclass :class:`~choreo.transports.shared.ProducerBase` and
:class:`~choreo.transports.shared.ConsumerBase`, which implement the open/closed checks,
failure accounting, rebalance-callback bookkeeping and close-once behaviour, so a
producer implements ``_produce``, ``flush`` and ``close`` (plus the four transaction
methods if its client has transactions) and a consumer ``_subscribe``, ``poll``,
``commit``, ``seek``, ``pause``, ``resume``, ``assignment`` and ``_close_client``; then
run the contract suite :mod:`choreo.testing.transport_contract` against it.

Offsets follow Kafka's convention everywhere: a committed offset is the offset of the
*next* record to read (last handled offset + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "RECORD_SHELL",
    "Consumer",
    "Headers",
    "Outgoing",
    "Producer",
    "RebalanceCallback",
    "Record",
    "RenewableProducer",
    "TopicPartition",
    "TransactionalProducer",
    "Transport",
    "make_record",
    "make_records",
    "supports_transactions",
]

Headers = Sequence[tuple[str, bytes]]
"""Record headers as (name, value) pairs; values are bytes (choreo writes UTF-8)."""

Outgoing = tuple[str, str, bytes | None, bytes | None, Headers]
"""A record to publish as ``(id, topic, key, value, headers)``; the id is the caller's own
(an outbox record's) and is not sent."""


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


_StoredHeaders = tuple[tuple[str, bytes], ...]
_RecordBuilder = Callable[[str, int, int, bytes | None, bytes | None, _StoredHeaders, int], Record]


class _RecordShell:
    """A mutable object with :class:`Record`'s slots, turned into a Record once filled in."""

    __slots__ = ("headers", "key", "offset", "partition", "timestamp_ms", "topic", "value")
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: _StoredHeaders
    timestamp_ms: int


def _record_builder() -> _RecordBuilder:
    """Return a function building a :class:`Record` from its fields, cheaper than ``Record()``.

    ``Record`` is a frozen slots dataclass whose ``__init__`` assigns each field through
    ``object.__setattr__``: about 1 µs, a tenth of a runtime hop. The builder fills a
    :class:`_RecordShell` (same slots, plain attribute stores) and then sets its class to
    ``Record``, which CPython allows between classes of identical layout: an equal
    ``Record`` for a third of the cost. If that ever stops working (``Record`` changed),
    the constructor is used.
    """
    def build(  # noqa: PLR0917 - Record's seven fields, in Record's order
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: _StoredHeaders,
        timestamp_ms: int,
    ) -> Record:
        shell = _RecordShell()  # a plain class: cheaper than object.__new__(_RecordShell)
        shell.topic = topic
        shell.partition = partition
        shell.offset = offset
        shell.key = key
        shell.value = value
        shell.headers = headers
        shell.timestamp_ms = timestamp_ms
        shell.__class__ = Record  # type: ignore[assignment]
        return shell  # type: ignore[return-value]

    sample: tuple[str, int, int, bytes, bytes, _StoredHeaders, int] = (
        "t",
        1,
        2,
        b"k",
        b"v",
        (("h", b"x"),),
        3,
    )
    try:
        built = build(*sample)
    except TypeError:  # pragma: no cover - Record's layout changed
        return Record
    if type(built) is not Record or built != Record(*sample):  # pragma: no cover
        return Record
    return build


make_record: Final = _record_builder()
"""Build a :class:`Record` from its seven fields in order, at a third of ``Record()``'s cost.

For transports that turn many client messages into records per poll.
"""

RECORD_SHELL: Final[type[_RecordShell] | None] = None if make_record is Record else _RecordShell
"""The class :data:`make_record` fills, for a poll loop that inlines its stores; ``None``
when the builder fell back to ``Record()`` (then build with :data:`make_record`).

A loop that fills a ``RECORD_SHELL()`` with all seven of :class:`Record`'s fields and then
sets its ``__class__`` to ``Record`` builds what :data:`make_record` builds, without a
Python call per record (the confluent-kafka consumer's poll does; its records are checked
against ``Record(...)`` in ``tests/transports/test_confluent_records.py``).
"""


def make_records(
    topic: str,
    partition: int,
    offset: int,
    stored: Iterable[tuple[bytes | None, bytes | None, _StoredHeaders, int]],
) -> list[Record]:
    """Return the :class:`Record` of each ``(key, value, headers, timestamp_ms)`` in ``stored``.

    They are of ``topic``'s ``partition``, at consecutive offsets from ``offset``: what
    :data:`make_record` builds for each, with its slot stores in one loop instead of a
    call per record (a transport that keeps its records' fields, as the memory bus does).
    The loop repeats the builder's stores on purpose: a call per record is what it saves,
    on the memory bus's poll path; ``tests/transports/test_memory_storage.py`` checks
    that both build records equal to ``Record(...)``.
    """
    if make_record is Record:  # pragma: no cover - Record's layout changed: the constructor
        return [Record(topic, partition, at, *fields) for at, fields in enumerate(stored, offset)]
    records: list[Record] = []
    append = records.append
    for key, value, headers, timestamp_ms in stored:
        shell = _RecordShell()
        shell.topic = topic
        shell.partition = partition
        shell.offset = offset
        shell.key = key
        shell.value = value
        shell.headers = headers
        shell.timestamp_ms = timestamp_ms
        shell.__class__ = Record  # type: ignore[assignment]
        append(shell)  # type: ignore[arg-type]
        offset += 1
    return records

RebalanceCallback = Callable[[list[TopicPartition]], None]
"""Called with the partitions assigned to (or revoked from) a consumer."""


@runtime_checkable
class Producer(Protocol):
    """Publishes records; delivery is confirmed by :meth:`flush`, never per record."""

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

    def close(self) -> None:
        """Flush what is queued (best effort) and release the client."""
        ...


@runtime_checkable
class TransactionalProducer(Producer, Protocol):
    """A producer with Kafka transactions: the optional capability exactly-once needs.

    A transport's :meth:`Transport.producer` returns one when given a
    ``transactional_id`` and its client supports transactions; creating it fences older
    producers with the same id. Errors are :class:`~choreo.errors.TransactionError` with
    ``fatal`` (fenced: the producer is unusable), ``abortable`` and ``retriable`` flags.
    """

    @property
    def transactional(self) -> bool:
        """True when this producer was created with a transactional id."""
        ...

    def begin_transaction(self) -> None:
        """Begin a transaction; records published until commit belong to it."""
        ...

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: Consumer, timeout: float = 30.0
    ) -> None:
        """Add the consumer group's ``offsets`` to the current transaction."""
        ...

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Commit the current transaction: its records and offsets become visible at once."""
        ...

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Abort the current transaction: its records are never seen by read_committed."""
        ...


@runtime_checkable
class RenewableProducer(Protocol):
    """A transactional producer whose client can go stale in a broker outage (optional).

    A client that lost every broker (a broker restart) may keep a coordinator that no
    longer exists and hang in its next transactional call; a renewal replaces it by a new
    client with the same transactional id, which registers the id again: the coordinator
    aborts any transaction the id left open (and the consumer-group offsets it held
    pending), so ``read_committed`` readers and the group's offset fetches stop waiting.
    """

    def renew_if_stale(self) -> bool:
        """Replace the client if it lost every broker since it was created; return whether it did.

        Raises :class:`~choreo.errors.TransactionError` when the new client cannot register.
        """
        ...


def supports_transactions(producer: Producer) -> bool:
    """Return True when ``producer`` is a transactional producer (created with an id)."""
    return isinstance(producer, TransactionalProducer) and producer.transactional


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

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop fetching from assigned ``partitions`` until :meth:`resume`; keep polling.

        Polling a consumer whose partitions are all paused returns no records but keeps
        it a live member of its group (no ``max.poll.interval.ms`` expiry). A rebalance
        that takes a paused partition away forgets its pause.
        """
        ...

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch from paused ``partitions`` again, from where their next poll is."""
        ...

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions currently assigned to this consumer."""
        ...

    def close(self, *, leave_group: bool = False) -> None:
        """Leave the group and release the client (does not commit).

        A static member (created with an ``instance_id``) releases the client without
        leaving the group, so a replacement with its instance id gets the same partitions
        back without a rebalance; with ``leave_group=True`` it leaves too, so the other
        members get its partitions at once (a clean stop of a replica that is not
        coming back right away).
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

    def create_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int = 1,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
    ) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are).

        ``replication_factor`` None is the cluster's default; ``min_insync_replicas``
        becomes the topics' ``min.insync.replicas`` config (None: the broker's default).
        A Kafka transport raises :class:`~choreo.errors.ConfigurationError` before
        creating anything when a topic is missing and the cluster has fewer live brokers
        than either asks for (see :mod:`choreo.transports.replication`); the in-memory
        bus keeps one copy whatever is asked.
        """
        ...

    def list_topics(self) -> list[str]:
        """Return the names of the topics that exist."""
        ...
