"""The memory bus: an in-process Kafka cluster of topics, partitions, groups and transactions.

See :mod:`choreo.transports.memory` for the Kafka behaviours it keeps and where it differs.
Everything here runs under the bus's one lock; the clients in
:mod:`choreo.transports.memory.clients` call the ``*_locked`` methods while holding it.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from time import time_ns as _time_ns
from typing import Final, Protocol

from choreo.errors import ConfigurationError, TransactionError, TransportError
from choreo.transports.assignors import ASSIGNORS, Assignor, assign
from choreo.transports.base import Headers, Record, TopicPartition, make_record, make_records
from choreo.transports.partitioner import partition_for

__all__ = ["GroupMember", "MemoryBus"]

logger = logging.getLogger("choreo.transports.memory")

class GroupMember(Protocol):
    """What the bus needs of a group's member (a ``MemoryConsumer``, which names the bus)."""

    @property
    def group_id(self) -> str:
        """The consumer group it belongs to."""

    @property
    def member_id(self) -> str:
        """Its id within the group."""

    @property
    def owns_partitions(self) -> bool:
        """Whether it holds partitions a rebalance must take back first."""

    def matches(self, topic: str) -> bool:
        """Return whether it subscribes to ``topic``."""


_LEGAL_TOPIC: Final = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_KEY_CACHE_LIMIT: Final = 65_536
_DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_588  # Kafka's message.max.bytes default
HEADER_ALLOWANCE: Final = 65_536
NS_PER_MS: Final = 1_000_000

_StoredHeaders = tuple[tuple[str, bytes], ...]
_new_record: Final = make_record


def _record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Return the bytes a record carries (key, value, header names and values).

    Publishing calls this only for records whose key and value come within
    ``HEADER_ALLOWANCE`` of the limit, so a small record never pays for the header sum.
    """
    size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    for name, data in headers:
        size += len(name) + len(data)
    return size


_Stored = tuple[bytes | None, bytes | None, _StoredHeaders, int]
"""A record as a partition log keeps it: key, value, headers, timestamp (ms).

Topic, partition and offset follow from where it is stored. Plain tuples of immutable
values leave the garbage collector's view after its first pass, so a bus holding many
records costs collections nothing; consumers build :class:`Record` objects as they poll.
"""


class _Topic:
    """One topic: a log of stored records per partition, and their publication order.

    A one-partition topic needs neither the key hash nor a separate publication order
    (its only partition is that order), so both are skipped for it.
    """

    __slots__ = ("key_partitions", "name", "order", "partitions", "round_robin", "single")

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions: list[list[_Stored]] = [[] for _ in range(partitions)]
        self.single: list[_Stored] | None = self.partitions[0] if partitions == 1 else None
        self.order: list[tuple[int, int]] = []  # (partition, offset), when partitions > 1
        self.round_robin = 0
        self.key_partitions: dict[bytes, int] = {}

    def records(self, partition: int, start: int = 0, stop: int | None = None) -> list[Record]:
        """Return the records of ``partition`` from offset ``start`` to ``stop`` (excluded)."""
        return make_records(self.name, partition, start, self.partitions[partition][start:stop])

    def published(self) -> list[Record]:
        """Return the topic's records in publication order."""
        if self.single is not None:
            return self.records(0)
        name, logs = self.name, self.partitions
        return [
            _new_record(name, partition, offset, *logs[partition][offset])
            for partition, offset in self.order
        ]

    def partition_of(self, key: bytes | None) -> int:
        """Return the partition a record with ``key`` goes to."""
        count = len(self.partitions)
        if key is None:
            self.round_robin += 1
            return (self.round_robin - 1) % count
        cached = self.key_partitions.get(key)
        if cached is None:
            if len(self.key_partitions) >= _KEY_CACHE_LIMIT:
                self.key_partitions.clear()
            cached = self.key_partitions[key] = partition_for(key, count)
        return cached

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...],
        stamp: int | None = None,
    ) -> None:
        """Append one record to the partition its key maps to (timestamped now by default)."""
        if stamp is None:
            stamp = _now_ms()
        log = self.single
        if log is not None:
            log.append((key, value, headers, stamp))
            return
        partition = self.key_partitions.get(key) if key is not None else None
        if partition is None:
            partition = self.partition_of(key)
        log = self.partitions[partition]
        self.order.append((partition, len(log)))
        log.append((key, value, headers, stamp))


def _now_ms() -> int:
    """Return the wall-clock time in milliseconds (a record's timestamp)."""
    return _time_ns() // NS_PER_MS


class _Group:
    """A consumer group: committed offsets, members, and the current generation's plan."""

    __slots__ = ("assignment", "awaiting", "committed", "generation", "group_id", "members")

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.committed: dict[TopicPartition, int] = {}
        self.members: dict[str, GroupMember] = {}
        self.generation = 0
        self.assignment: dict[str, list[TopicPartition]] = {}
        # Members that still hold partitions of an older generation; the new
        # assignment is handed out only once this set is empty.
        self.awaiting: set[str] = set()


class MemoryBus:
    """An in-process Kafka cluster shared by every transport, producer and consumer on it.

    ``default_partitions`` is the partition count of auto-created topics,
    ``auto_create_topics`` mirrors the broker setting, ``max_message_bytes`` the
    broker's ``message.max.bytes``, and ``assignor`` is ``"range"`` or ``"roundrobin"``.
    """

    def __init__(
        self,
        *,
        default_partitions: int = 1,
        auto_create_topics: bool = True,
        max_message_bytes: int = _DEFAULT_MAX_MESSAGE_BYTES,
        assignor: Assignor = "range",
    ) -> None:
        if default_partitions < 1:
            raise ConfigurationError("default_partitions must be at least 1")
        if assignor not in ASSIGNORS:
            raise ConfigurationError(f"unknown assignor {assignor!r}: use 'range' or 'roundrobin'")
        self.default_partitions = default_partitions
        self.auto_create_topics = auto_create_topics
        self.max_message_bytes = max_message_bytes
        self.assignor: Assignor = assignor
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._transactional_epochs: dict[str, int] = {}
        self._member_ids = itertools.count(1)
        self._waiting = 0  # threads blocked in poll; publishing skips notify when zero

    # --- inspection (for tests and tools) -------------------------------------------

    def records(self, topic: str, partition: int | None = None) -> list[Record]:
        """Return the visible records of ``topic`` in publication order (or of one partition)."""
        with self._cond:
            found = self._topics.get(topic)
            if found is None:
                return []
            if partition is None:
                return found.published()
            return found.records(partition)

    def committed(self, group_id: str) -> dict[TopicPartition, int]:
        """Return the offsets committed by ``group_id`` (each the next offset to read)."""
        with self._cond:
            group = self._groups.get(group_id)
            return dict(group.committed) if group is not None else {}

    def partitions(self, topic: str) -> int:
        """Return the partition count of ``topic`` (0 when it does not exist)."""
        with self._cond:
            found = self._topics.get(topic)
            return len(found.partitions) if found is not None else 0

    def topics(self) -> list[str]:
        """Return the names of the topics that exist, sorted."""
        with self._cond:
            return sorted(self._topics)

    # --- topics ----------------------------------------------------------------------

    def create_topics(self, topics: Sequence[str], *, partitions: int | None = None) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are)."""
        count = self.default_partitions if partitions is None else partitions
        if count < 1:
            raise TransportError(f"a topic needs at least one partition, not {count}")
        for name in topics:
            self.check_topic_name(name)
        with self._cond:
            for name in topics:
                if name not in self._topics:
                    self._create_topic_locked(name, count)

    @staticmethod
    def check_topic_name(name: str) -> None:
        """Raise TransportError unless ``name`` is a legal Kafka topic name."""
        if name in (".", "..") or _LEGAL_TOPIC.fullmatch(name) is None:
            raise TransportError(
                f"invalid topic name {name!r}: use 1-249 characters of [a-zA-Z0-9._-]"
            )

    def _create_topic_locked(self, name: str, partitions: int) -> _Topic:
        """Create a topic and rebalance the groups whose subscriptions match it."""
        topic = self._topics[name] = _Topic(name, partitions)
        for group in self._groups.values():
            if any(member.matches(name) for member in group.members.values()):
                self._rebalance_locked(group)
        self._cond.notify_all()
        return topic

    def _topic_for_publish_locked(self, name: str) -> _Topic:
        """Return the topic to publish to, creating it if the bus auto-creates topics."""
        topic = self._topics.get(name)
        if topic is not None:
            return topic
        if not self.auto_create_topics:
            raise TransportError(f"unknown topic {name!r} (auto-creation is off)")
        self.check_topic_name(name)
        return self._create_topic_locked(name, self.default_partitions)

    # --- publishing ------------------------------------------------------------------

    def check_record(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Raise TransportError when a record exceeds the broker's size limit."""
        size = _record_size(key, value, headers)
        if size > self.max_message_bytes:
            raise TransportError(
                f"record of {size} bytes exceeds message.max.bytes={self.max_message_bytes}"
            )

    def _wait_locked(self, timeout: float) -> None:
        """Block until something is published or the group changes, at most ``timeout``."""
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    def _append_transaction(
        self,
        records: Sequence[tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]],
        offsets: Mapping[str, Mapping[TopicPartition, int]],
        transactional_id: str,
        epoch: int,
    ) -> None:
        """Make a transaction's records and offsets visible at once, unless fenced."""
        with self._cond:
            if self._transactional_epochs.get(transactional_id) != epoch:
                raise TransactionError(
                    f"producer fenced: a newer producer uses transactional id {transactional_id!r}",
                    fatal=True,
                )
            try:
                targets = [self._topic_for_publish_locked(name) for name, *_ in records]
            except TransportError as exc:
                raise TransactionError(str(exc), abortable=True) from exc
            for target, (_, key, value, headers) in zip(targets, records, strict=True):
                target.append(key, value, headers)
            for group_id, group_offsets in offsets.items():
                self._group_locked(group_id).committed.update(group_offsets)
            self._cond.notify_all()

    def _register_transactional_id(self, transactional_id: str) -> int:
        """Return a new epoch for ``transactional_id``, fencing older producers."""
        with self._cond:
            epoch = self._transactional_epochs.get(transactional_id, 0) + 1
            self._transactional_epochs[transactional_id] = epoch
            return epoch

    # --- groups ----------------------------------------------------------------------

    def _group_locked(self, group_id: str) -> _Group:
        """Return the group called ``group_id``, creating it on first use."""
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = _Group(group_id)
        return group

    def _join(self, consumer: GroupMember) -> None:
        """Add ``consumer`` to its group (or update its subscription) and rebalance."""
        with self._cond:
            group = self._group_locked(consumer.group_id)
            group.members[consumer.member_id] = consumer
            self._rebalance_locked(group)

    def _leave(self, consumer: GroupMember) -> None:
        """Remove ``consumer`` from its group and rebalance the members left."""
        with self._cond:
            group = self._groups.get(consumer.group_id)
            if group is None or group.members.pop(consumer.member_id, None) is None:
                return
            group.awaiting.discard(consumer.member_id)
            self._rebalance_locked(group)

    def _rebalance_locked(self, group: _Group) -> None:
        """Start a new generation: plan the assignment, ask holders to give theirs up."""
        group.generation += 1
        group.awaiting = {mid for mid, member in group.members.items() if member.owns_partitions}
        group.assignment = self._plan_locked(group)
        logger.debug(
            "group %s generation %d: %s", group.group_id, group.generation, group.assignment
        )
        self._cond.notify_all()

    def _plan_locked(self, group: _Group) -> dict[str, list[TopicPartition]]:
        """Assign every subscribed partition to one member with the configured assignor."""
        members = sorted(group.members)
        subscribers = {
            name: [mid for mid in members if group.members[mid].matches(name)]
            for name in sorted(self._topics)
        }
        return assign(
            self.assignor, members, subscribers, lambda name: len(self._topics[name].partitions)
        )
