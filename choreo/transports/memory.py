"""An in-process transport that behaves like Kafka: the embedded default and the test double.

A :class:`MemoryBus` is one "cluster": topics with partitions, per-partition offsets,
consumer groups with committed offsets and rebalances, and transactions. Any number of
:class:`MemoryTransport` objects (one per service, say) share one bus; every method is
thread-safe and ``poll`` blocks on a condition variable until data or the timeout.

Kafka behaviours kept on purpose:

* topics are auto-created on publish with ``default_partitions`` (like
  ``auto.create.topics.enable``); names must be legal Kafka topic names;
* a non-null key goes to Kafka's murmur2 partition, so the partition *number* matches a
  real cluster with the same partition count; a null key is spread round robin;
* a group hands out partitions with the ``range`` (default) or ``roundrobin`` assignor;
  a join or leave triggers an eager rebalance: every member first gives up its
  partitions (``on_revoke``, called in its own ``poll``) and only when all have done so
  is the new assignment handed out (``on_assign``). A member that stops polling
  therefore holds the group, as on Kafka until ``max.poll.interval.ms``;
* regex subscriptions (``^...``) also pick up topics created later;
* records published in a transaction become visible (and its offsets committed) at
  commit, atomically; an abort drops them; a newer producer with the same
  transactional id fences the older one.

Differences: there is no retention, records published in a transaction get their
offsets at commit (so offsets never have gaps), and publishing is immediately visible
rather than after a network round trip.

Cost: a partition log keeps plain tuples (which the garbage collector soon stops
tracking) and a consumer builds :class:`~choreo.transports.base.Record` objects as it
polls, as a Kafka client does; a one-partition topic skips the key hash. Publishing is
about 0.7 µs a record, polling about 0.25 µs (see ``bench/bench_runtime.py``).
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from time import time_ns as _time_ns
from typing import Final, Literal

from choreo.errors import (
    CommitError,
    ConfigurationError,
    DeliveryError,
    TransactionError,
    TransportClosedError,
    TransportError,
)
from choreo.transports.base import (
    Consumer,
    Headers,
    RebalanceCallback,
    Record,
    TopicPartition,
)
from choreo.transports.partitioner import partition_for

__all__ = ["MemoryBus", "MemoryConsumer", "MemoryProducer", "MemoryTransport"]

logger = logging.getLogger(__name__)

Assignor = Literal["range", "roundrobin"]

_LEGAL_TOPIC: Final = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_KEY_CACHE_LIMIT: Final = 65_536
_DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_588  # Kafka's message.max.bytes default
_HEADER_ALLOWANCE: Final = 65_536
_NS_PER_MS: Final = 1_000_000


def _record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Return the bytes a record carries (key, value, header names and values).

    Publishing calls this only for records whose key and value come within
    ``_HEADER_ALLOWANCE`` of the limit, so a small record never pays for the header sum.
    """
    size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    for name, data in headers:
        size += len(name) + len(data)
    return size


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
    new = object.__new__

    def build(  # noqa: PLR0917 - Record's seven fields, in Record's order
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: _StoredHeaders,
        timestamp_ms: int,
    ) -> Record:
        shell = new(_RecordShell)
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


_new_record: Final = _record_builder()


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
        name = self.name
        log = self.partitions[partition]
        stop = len(log) if stop is None else stop
        return [
            _new_record(name, partition, offset, key, value, headers, stamp)
            for offset, (key, value, headers, stamp) in zip(
                range(start, stop), log[start:stop], strict=True
            )
        ]

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
        self, key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes], ...]
    ) -> None:
        """Append one record to the partition its key maps to."""
        log = self.single
        if log is not None:
            log.append((key, value, headers, _now_ms()))
            return
        partition = self.key_partitions.get(key) if key is not None else None
        if partition is None:
            partition = self.partition_of(key)
        log = self.partitions[partition]
        self.order.append((partition, len(log)))
        log.append((key, value, headers, _now_ms()))


def _now_ms() -> int:
    """Return the wall-clock time in milliseconds (a record's timestamp)."""
    return _time_ns() // _NS_PER_MS


class _Group:
    """A consumer group: committed offsets, members, and the current generation's plan."""

    __slots__ = ("assignment", "awaiting", "committed", "generation", "group_id", "members")

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.committed: dict[TopicPartition, int] = {}
        self.members: dict[str, MemoryConsumer] = {}
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
        if assignor not in ("range", "roundrobin"):
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
            self._check_topic_name(name)
        with self._cond:
            for name in topics:
                if name not in self._topics:
                    self._create_topic_locked(name, count)

    @staticmethod
    def _check_topic_name(name: str) -> None:
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
        self._check_topic_name(name)
        return self._create_topic_locked(name, self.default_partitions)

    # --- publishing ------------------------------------------------------------------

    def _check_record(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
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

    def _join(self, consumer: MemoryConsumer) -> None:
        """Add ``consumer`` to its group (or update its subscription) and rebalance."""
        with self._cond:
            group = self._group_locked(consumer.group_id)
            group.members[consumer.member_id] = consumer
            self._rebalance_locked(group)

    def _leave(self, consumer: MemoryConsumer) -> None:
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
        plan: dict[str, list[TopicPartition]] = {mid: [] for mid in group.members}
        members = sorted(group.members)
        per_topic = {
            name: [mid for mid in members if group.members[mid].matches(name)]
            for name in sorted(self._topics)
        }
        if self.assignor == "range":
            for name, subscribers in per_topic.items():
                if not subscribers:
                    continue
                count = len(self._topics[name].partitions)
                share, extra = divmod(count, len(subscribers))
                for index, mid in enumerate(subscribers):
                    start = share * index + min(index, extra)
                    length = share + (1 if index < extra else 0)
                    plan[mid].extend(TopicPartition(name, p) for p in range(start, start + length))
        else:
            cursor = 0
            for name, subscribers in per_topic.items():
                for p in range(len(self._topics[name].partitions)):
                    # Like Kafka's RoundRobinAssignor: walk the members in order and
                    # skip the ones not subscribed to this topic.
                    while subscribers and members[cursor % len(members)] not in subscribers:
                        cursor += 1
                    if subscribers:
                        plan[members[cursor % len(members)]].append(TopicPartition(name, p))
                        cursor += 1
        return plan


class MemoryProducer:
    """A producer on a :class:`MemoryBus`; records are visible as soon as they are published.

    Per-record failures (an oversized record, an illegal topic name) are collected and
    raised by the next :meth:`flush` as one :class:`~choreo.errors.DeliveryError`, as a
    Kafka client reports them through delivery callbacks.
    """

    def __init__(self, bus: MemoryBus, transactional_id: str | None = None) -> None:
        self._bus = bus
        self._transactional_id = transactional_id
        self._epoch = bus._register_transactional_id(transactional_id) if transactional_id else 0
        self._closed = False
        self._failures = 0
        self._first_failure = ""
        self._in_transaction = False
        self._txn_records: list[
            tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]
        ] = []
        self._txn_offsets: dict[str, dict[TopicPartition, int]] = {}
        self._txn_error = ""

    @property
    def transactional(self) -> bool:
        """True when this producer was created with a transactional id."""
        return self._transactional_id is not None

    def _check_open(self) -> None:
        """Raise TransportClosedError after :meth:`close`."""
        if self._closed:
            raise TransportClosedError("producer is closed")

    def _record_failure(self, topic: str, reason: str) -> None:
        """Remember a failed record so the next flush (or commit) reports it."""
        self._failures += 1
        if self._failures == 1:
            self._first_failure = f"{topic}: {reason}"

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
            raise TransportClosedError("producer is closed")
        frozen = headers if headers.__class__ is tuple else tuple(headers)
        if self._transactional_id is not None:
            self._publish_in_transaction(topic, key, value, frozen)
            return
        bus = self._bus
        try:
            size = (len(value) if value is not None else 0) + (len(key) if key else 0)
            if size + _HEADER_ALLOWANCE > bus.max_message_bytes:
                bus._check_record(key, value, frozen)
            with bus._lock:  # the condition's own lock, without the Python-level wrapper
                target = bus._topics.get(topic) or bus._topic_for_publish_locked(topic)
                log = target.single
                if log is not None:  # the common one-partition case, inlined
                    log.append((key, value, frozen, _time_ns() // _NS_PER_MS))
                else:
                    target.append(key, value, frozen)
                if bus._waiting:  # wake the consumers waiting in poll
                    bus._cond.notify_all()
        except TransportError as exc:
            self._record_failure(topic, str(exc))

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
            if size + _HEADER_ALLOWANCE > bus.max_message_bytes:
                bus._check_record(key, value, headers)
            if topic not in bus._topics:
                bus._check_topic_name(topic)
            self._txn_records.append((topic, key, value, headers))
        except TransportError as exc:
            self._record_failure(topic, str(exc))
            if not self._txn_error:
                self._txn_error = f"{topic}: {exc}"

    def flush(self, timeout: float | None = None) -> None:
        """Raise DeliveryError if a record published since the last flush failed."""
        self._check_open()
        if self._failures:
            count, first = self._failures, self._first_failure
            self._failures, self._first_failure = 0, ""
            raise DeliveryError(f"{count} record(s) not delivered; first failure: {first}")

    # --- transactions ----------------------------------------------------------------

    def _check_transactional(self) -> None:
        """Raise unless this producer is open and transactional."""
        self._check_open()
        if self._transactional_id is None:
            raise TransactionError("producer has no transactional id")

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
        self._failures, self._first_failure = 0, ""

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


class MemoryConsumer:
    """A consumer-group member on a :class:`MemoryBus` (see the module docstring)."""

    def __init__(self, bus: MemoryBus, group_id: str, *, from_beginning: bool = True) -> None:
        self._bus = bus
        self.group_id = group_id
        self.member_id = f"{group_id}-{next(bus._member_ids):08d}"
        self.instance_id: str | None = None  # static membership id, informational here
        self._from_beginning = from_beginning
        self._closed = False
        self._closing = False
        self._joined = False
        self._exact: frozenset[str] = frozenset()
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._generation = 0  # generation whose assignment this member holds
        self._owned: list[TopicPartition] = []
        self._logs: list[list[_Stored]] = []
        self._sources: list[_Topic] = []  # the topic of each owned partition
        self._positions: dict[TopicPartition, int] = {}
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

    def _check_open(self) -> None:
        """Raise TransportClosedError after :meth:`close`."""
        if self._closed:
            raise TransportClosedError("consumer is closed")

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Subscribe to topics (``^`` starts a regular expression); replaces the subscription."""
        self._check_open()
        try:
            patterns = tuple(re.compile(t) for t in topics if t.startswith("^"))
        except re.error as exc:
            raise ConfigurationError(f"invalid topic pattern: {exc}") from exc
        with self._bus._cond:
            self._exact = frozenset(t for t in topics if not t.startswith("^"))
            self._patterns = patterns
            self._on_assign, self._on_revoke = on_assign, on_revoke
            self._joined = True
            self._bus._join(self)

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
        sources = self._sources
        count = len(owned)
        start = self._next
        for step in range(count):
            index = (start + step) % count
            log = logs[index]
            tp = owned[index]
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

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions currently assigned to this consumer."""
        self._check_open()
        return list(self._owned)

    def high_watermarks(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return the end offset (next offset to be written) of each known partition.

        Used for consumer lag (:mod:`choreo.observability.metrics`); unknown partitions
        are left out.
        """
        self._check_open()
        ends: dict[TopicPartition, int] = {}
        with self._bus._cond:
            for tp in partitions:
                topic = self._bus._topics.get(tp.topic)
                if topic is not None and 0 <= tp.partition < len(topic.partitions):
                    ends[tp] = len(topic.partitions[tp.partition])
        return ends

    def close(self) -> None:
        """Leave the group (on_revoke runs first, its partitions go to the others); no commit."""
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            owned = list(self._owned)
            if owned and self._on_revoke is not None:
                self._on_revoke(owned)
        finally:
            with self._bus._cond:
                self._closed = True
                self._owned, self._logs, self._sources, self._positions = [], [], [], {}
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
        if not group_id:
            raise ConfigurationError("a consumer needs a group id")
        if instance_id is not None and not instance_id:
            raise ConfigurationError("instance_id must not be empty")
        consumer = MemoryConsumer(self.bus, group_id, from_beginning=from_beginning)
        consumer.instance_id = instance_id
        return consumer

    def create_topics(self, topics: Sequence[str], *, partitions: int = 1) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are)."""
        self.bus.create_topics(topics, partitions=partitions)

    def list_topics(self) -> list[str]:
        """Return the names of the topics that exist."""
        return self.bus.topics()

    def close(self) -> None:
        """Do nothing: the bus outlives its transports (present for symmetry with Kafka)."""
