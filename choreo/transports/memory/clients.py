"""The memory transport's clients: producer, consumer-group member, and the transport.

They share the checks, failure accounting and close-once behaviour of every transport
(:mod:`choreo.transports.shared`) and keep their state on a
:class:`~choreo.transports.memory.bus.MemoryBus`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from time import time_ns as _time_ns

from choreo.errors import (
    CommitError,
    ConfigurationError,
    TransactionError,
    TransportError,
)
from choreo.transports.base import Consumer, Headers, Outgoing, Record, TopicPartition
from choreo.transports.memory.bus import (
    HEADER_ALLOWANCE,
    NS_PER_MS,
    MemoryBus,
    _Stored,
    _Topic,
)
from choreo.transports.replication import check_replication
from choreo.transports.shared import (
    ConsumerBase,
    ProducerBase,
    check_instance_id,
    require_group_id,
)

__all__ = ["MemoryConsumer", "MemoryProducer", "MemoryTransport"]

logger = logging.getLogger("choreo.transports.memory")


class MemoryProducer(ProducerBase):
    """A producer on a :class:`MemoryBus`; records are visible as soon as they are published.

    Per-record failures (an oversized record, an illegal topic name) are collected and
    raised by the next :meth:`flush` as one :class:`~choreo.errors.DeliveryError`, as a
    Kafka client reports them through delivery callbacks. With a transactional id it is a
    :class:`~choreo.transports.base.TransactionalProducer`.
    """

    def __init__(self, bus: MemoryBus, transactional_id: str | None = None) -> None:
        super().__init__(transactional_id)
        self._bus = bus
        self._epoch = bus._register_transactional_id(transactional_id) if transactional_id else 0
        self._in_transaction = False
        self._txn_records: list[
            tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]
        ] = []
        self._txn_offsets: dict[str, dict[TopicPartition, int]] = {}
        self._txn_error = ""

    def publish(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        """Append one record to ``topic`` (or to the open transaction); never raises per record."""
        if self._closed:
            self._check_open()
        frozen = headers if headers.__class__ is tuple else tuple(headers)
        if self._transactional_id is not None:
            self._publish_in_transaction(topic, key, value, frozen)
            return
        bus = self._bus
        try:
            size = (len(value) if value is not None else 0) + (len(key) if key else 0)
            if size + HEADER_ALLOWANCE > bus.max_message_bytes:
                bus.check_record(key, value, frozen)
            with bus._lock:  # the condition's own lock, without the Python-level wrapper
                target = bus._topics.get(topic) or bus._topic_for_publish_locked(topic)
                log = target.single
                if log is not None:  # the common one-partition case, inlined
                    log.append((key, value, frozen, _time_ns() // NS_PER_MS))
                else:
                    target.append(key, value, frozen)
                if bus._waiting:  # wake the consumers waiting in poll
                    bus._cond.notify_all()
        except TransportError as exc:
            self._record_failure(topic, str(exc), False)

    def publish_many(self, records: Iterable[Outgoing]) -> None:
        """Append every record in order, exactly as :meth:`publish` would each.

        Outside a transaction the batch takes the bus's lock once and one clock reading
        (every record of the batch gets that timestamp); the records become visible
        together when the call returns. A record :meth:`publish` would refuse (oversized,
        illegal topic name) is counted for the next flush the same way, and the others
        are appended.
        """
        if self._closed:
            self._check_open()
        if self._transactional_id is not None:
            super().publish_many(records)
            return
        bus = self._bus
        topics = bus._topics
        limit = bus.max_message_bytes - HEADER_ALLOWANCE
        last: str | None = None  # the topic of the previous record, and its log
        target: _Topic | None = None
        log: list[_Stored] | None = None
        with bus._lock:
            stamp = _time_ns() // NS_PER_MS
            for _, topic, key, value, headers in records:
                if headers.__class__ is not tuple:
                    headers = tuple(headers)  # noqa: PLW2901 - frozen as publish does
                try:
                    if len(value or b"") + len(key or b"") > limit:
                        bus.check_record(key, value, headers)
                    if topic != last:
                        target = topics.get(topic) or bus._topic_for_publish_locked(topic)
                        last, log = topic, target.single
                    if log is not None:  # the common one-partition case, inlined
                        log.append((key, value, headers, stamp))
                    else:
                        target.append(key, value, headers, stamp)  # type: ignore[union-attr]
                except TransportError as exc:
                    self._record_failure(topic, str(exc), False)
            if bus._waiting:  # wake the consumers waiting in poll
                bus._cond.notify_all()

    def _publish_in_transaction(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...],
    ) -> None:
        """Hold one record back until the open transaction commits."""
        if not self._in_transaction:
            raise TransactionError(
                "transactional producer: call begin_transaction() before publish()"
            )
        bus = self._bus
        try:
            size = (len(value) if value is not None else 0) + (len(key) if key else 0)
            if size + HEADER_ALLOWANCE > bus.max_message_bytes:
                bus.check_record(key, value, headers)
            if topic not in bus._topics:
                bus.check_topic_name(topic)
            self._txn_records.append((topic, key, value, headers))
        except TransportError as exc:
            self._record_failure(topic, str(exc), False)
            if not self._txn_error:
                self._txn_error = f"{topic}: {exc}"

    # --- transactions ----------------------------------------------------------------

    def begin_transaction(self) -> None:
        """Begin a transaction; records and offsets are held back until commit."""
        self._check_transactional()
        if self._in_transaction:
            raise TransactionError("a transaction is already open")
        self._in_transaction = True
        self._txn_records = []
        self._txn_offsets = {}
        self._txn_error = ""

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: Consumer, timeout: float = 30.0
    ) -> None:
        """Commit ``offsets`` for the consumer's group if and when the transaction commits."""
        self._check_transactional()
        if not self._in_transaction:
            raise TransactionError("no open transaction")
        if not isinstance(consumer, MemoryConsumer) or consumer._bus is not self._bus:
            raise TransactionError("offsets need a consumer on the same memory bus")
        consumer._check_open()
        self._txn_offsets.setdefault(consumer.group_id, {}).update(offsets)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Make the transaction's records visible and its offsets committed, atomically."""
        self._check_transactional()
        if not self._in_transaction:
            raise TransactionError("no open transaction")
        if self._txn_error:
            raise TransactionError(
                f"transaction has failed records and must be aborted; first: {self._txn_error}",
                abortable=True,
            )
        assert self._transactional_id is not None
        self._bus._append_transaction(
            self._txn_records, self._txn_offsets, self._transactional_id, self._epoch
        )
        self._in_transaction = False
        self._txn_records, self._txn_offsets = [], {}

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Drop the transaction's records and offsets."""
        self._check_transactional()
        if not self._in_transaction:
            raise TransactionError("no open transaction")
        self._in_transaction = False
        self._txn_records, self._txn_offsets, self._txn_error = [], {}, ""
        self._reset_failures()

    def close(self) -> None:
        """Abort an open transaction, forget pending failures and refuse further use."""
        if self._closed:
            return
        if self._failures:
            logger.warning(
                "closing producer with %d undelivered record(s); first: %s",
                self._failures,
                self._first_failure,
            )
        self._in_transaction = False
        self._txn_records, self._txn_offsets = [], {}
        self._closed = True


class MemoryConsumer(ConsumerBase[MemoryBus]):
    """A consumer-group member on a :class:`MemoryBus` (see :mod:`choreo.transports.memory`)."""

    def __init__(self, bus: MemoryBus, group_id: str, *, from_beginning: bool = True) -> None:
        super().__init__(bus)
        self._bus = bus
        self.group_id = group_id
        self.member_id = f"{group_id}-{next(bus._member_ids):08d}"
        self.instance_id: str | None = None  # static membership id, informational here
        self._from_beginning = from_beginning
        self._joined = False
        self._exact: frozenset[str] = frozenset()
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._generation = 0  # generation whose assignment this member holds
        self._owned: list[TopicPartition] = []
        self._logs: list[list[_Stored]] = []
        self._sources: list[_Topic] = []  # the topic of each owned partition
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._next = 0  # partition index the next fetch starts at (fairness)
        with bus._cond:
            self._group = bus._group_locked(group_id)

    @property
    def owns_partitions(self) -> bool:
        """True while this member holds partitions of some generation."""
        return bool(self._owned)

    def matches(self, topic: str) -> bool:
        """Return True when ``topic`` is in this member's subscription."""
        return topic in self._exact or any(p.match(topic) for p in self._patterns)

    def _subscribe(self, client: MemoryBus, topics: Sequence[str]) -> None:
        """Join the group with ``topics`` (``^`` starts a regular expression)."""
        try:
            patterns = tuple(re.compile(t) for t in topics if t.startswith("^"))
        except re.error as exc:
            raise ConfigurationError(f"invalid topic pattern: {exc}") from exc
        with client._cond:
            self._exact = frozenset(t for t in topics if not t.startswith("^"))
            self._patterns = patterns
            self._joined = True
            client._join(self)

    def _sync(self) -> None:
        """Take part in a pending rebalance: revoke what is held, then take the new share."""
        bus, group = self._bus, self._group
        with bus._cond:
            revoked = list(self._owned) if self.member_id in group.awaiting else []
        try:
            if revoked and self._on_revoke is not None:
                self._on_revoke(revoked)
        finally:  # even when on_revoke raises, the partitions are given up
            if revoked:
                with bus._cond:
                    self._owned, self._logs, self._sources, self._positions = [], [], [], {}
                    self._paused.clear()
                    group.awaiting.discard(self.member_id)
                    bus._cond.notify_all()
        with bus._cond:
            self._check_open()
            if group.awaiting or self.member_id not in group.members:
                return
            assigned = list(group.assignment.get(self.member_id, ()))
            self._owned = assigned
            self._sources = [bus._topics[tp.topic] for tp in assigned]
            self._logs = [
                source.partitions[tp.partition]
                for tp, source in zip(assigned, self._sources, strict=True)
            ]
            self._positions = {
                tp: group.committed.get(tp, 0 if self._from_beginning else len(log))
                for tp, log in zip(assigned, self._logs, strict=True)
            }
            self._next = 0
            self._generation = group.generation
        if self._on_assign is not None:
            self._on_assign(list(assigned))

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout`` seconds for some."""
        self._check_open()
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        bus, group = self._bus, self._group
        deadline: float | None = None
        while True:
            if self._joined and self._generation != group.generation:
                self._sync()
            with bus._cond:
                self._check_open()
                if self._generation == group.generation and self._owned:
                    batch = self._fetch_locked(max_records)
                    if batch:
                        return batch
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                if now >= deadline:
                    return []
                bus._wait_locked(deadline - now)

    def _fetch_locked(self, max_records: int) -> list[Record]:
        """Take records from owned partitions, starting where the last fetch stopped."""
        batch: list[Record] = []
        owned, logs, positions = self._owned, self._logs, self._positions
        sources, paused = self._sources, self._paused
        count = len(owned)
        start = self._next
        for step in range(count):
            index = (start + step) % count
            log = logs[index]
            tp = owned[index]
            if tp in paused:
                continue
            position = positions[tp]
            available = len(log) - position
            if available <= 0:
                continue
            take = min(available, max_records - len(batch))
            batch.extend(sources[index].records(tp.partition, position, position + take))
            positions[tp] = position + take
            if len(batch) >= max_records:
                break
        self._next = (start + 1) % count
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit offsets (each the next offset to read) for this consumer's group."""
        self._check_open()
        with self._bus._cond:
            for tp, offset in offsets.items():
                if offset < 0:
                    raise CommitError(f"invalid offset {offset} for {tp}")
                if tp.topic not in self._bus._topics:
                    raise CommitError(f"unknown topic {tp.topic!r}")
            self._group.committed.update(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next poll of an assigned ``partition`` start at ``offset``."""
        self._check_open()
        if offset < 0:
            raise TransportError(f"cannot seek {partition} to negative offset {offset}")
        with self._bus._cond:
            if partition not in self._positions:
                raise TransportError(f"cannot seek {partition}: it is not assigned")
            self._positions[partition] = offset

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop fetching from assigned ``partitions`` until :meth:`resume`."""
        self._check_open()
        with self._bus._cond:
            for tp in partitions:
                if tp not in self._positions:
                    raise TransportError(f"cannot pause {tp}: it is not assigned")
            self._paused.update(partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch from ``partitions`` again (unassigned ones are ignored)."""
        self._check_open()
        with self._bus._cond:
            self._paused.difference_update(partitions)
            self._bus._cond.notify_all()

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions currently assigned to this consumer."""
        self._check_open()
        return list(self._owned)

    def high_watermarks(
        self, partitions: Sequence[TopicPartition], timeout: float = 2.0
    ) -> dict[TopicPartition, int]:
        """Return the end offset (next offset to be written) of each known partition.

        Used by catch-up reads and consumer lag (:mod:`choreo.observability.metrics`);
        unknown partitions are left out. ``timeout`` is the Kafka transports' bound: the
        bus answers at once.
        """
        del timeout
        self._check_open()
        ends: dict[TopicPartition, int] = {}
        with self._bus._cond:
            for tp in partitions:
                topic = self._bus._topics.get(tp.topic)
                if topic is not None and 0 <= tp.partition < len(topic.partitions):
                    ends[tp] = len(topic.partitions[tp.partition])
        return ends

    def positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return the position (next offset to read) of each assigned partition of ``partitions``.

        Used by catch-up reads (:mod:`choreo.transports.catchup`); others are left out.
        """
        self._check_open()
        with self._bus._cond:
            return {tp: self._positions[tp] for tp in partitions if tp in self._positions}

    def _close_client(self) -> None:
        """Leave the group (on_revoke runs first, its partitions go to the others); no commit."""
        try:
            owned = list(self._owned)
            if owned and self._on_revoke is not None:
                self._on_revoke(owned)
        finally:
            with self._bus._cond:
                self._closed = True
                self._owned, self._logs, self._sources, self._positions = [], [], [], {}
                self._paused.clear()
                if self._joined:
                    self._bus._leave(self)


class MemoryTransport:
    """The transport on a :class:`MemoryBus`; several transports may share one bus."""

    name = "memory"

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self.bus = bus if bus is not None else MemoryBus()

    def producer(self, *, transactional_id: str | None = None) -> MemoryProducer:
        """Return a new producer (transactional when ``transactional_id`` is given)."""
        return MemoryProducer(self.bus, transactional_id)

    def consumer(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> MemoryConsumer:
        """Return a new consumer in ``group_id``; ``from_beginning`` picks earliest or latest.

        ``instance_id`` (Kafka's static membership) is accepted and kept on the consumer
        but changes nothing: on the bus a closed member leaves at once and a new one is
        assigned at its first poll, so there is no session timeout to skip.
        """
        require_group_id(group_id)
        check_instance_id(instance_id)
        consumer = MemoryConsumer(self.bus, group_id, from_beginning=from_beginning)
        consumer.instance_id = instance_id
        return consumer

    def create_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int = 1,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
    ) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are).

        The bus lives in one process and keeps one copy of every record: the replication
        settings are checked for range and otherwise have no effect.
        """
        check_replication(replication_factor, min_insync_replicas)
        self.bus.create_topics(topics, partitions=partitions)

    def list_topics(self) -> list[str]:
        """Return the names of the topics that exist."""
        return self.bus.topics()

    def close(self) -> None:
        """Do nothing: the bus outlives its transports (present for symmetry with Kafka)."""
