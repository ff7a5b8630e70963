"""Hanging transactions: find them on partitions and end them (Kafka's KIP-664 admin APIs).

A transaction *hangs* on a partition when the partition still holds an open transaction
of a producer whose transaction coordinator no longer has that transaction open. Nothing
ends it: the partition's last stable offset stays where the transaction began, so every
``read_committed`` reader of the partition (every exactly-once worker, the tracker) waits
there for good, and a hanging transaction on a ``__consumer_offsets`` partition holds the
offsets it sent *pending*, so no ``read_committed`` member of that group can fetch its
committed offsets. Apache Kafka 4.x leaves one behind when a restarted broker loads its
transaction state before it knows the partitions the commit markers go to: it completes
the transaction and skips those markers ("Couldn't find leader endpoint ... likely
deleted already" in its log; docs/operating.md).

:func:`find_hanging` lists them: each partition's open transactions (DescribeProducers)
older than a minimum age whose coordinator (ListTransactions, DescribeTransactions) is not
in the middle of them. :func:`end_hanging` writes the missing marker straight to the
partition's leader (WriteTxnMarkers, as ``kafka-transactions.sh abort`` does), after
checking that the same transaction is still open there.

Which marker: Kafka's own tool can only *abort*. For the transaction a restarted broker
left behind that is wrong: its coordinator had decided to commit it, its consumer offsets
may already be committed (choreo's exactly-once worker commits them again after an
outage) and the handled inputs are in the service's inbox, so aborting its outputs loses
them for good. :attr:`Hanging.outcome` is what the coordinator decided, when its state
still shows it (the same producer id and epoch, in ``CompleteCommit`` or
``CompleteAbort``: see :func:`decided_outcome`); :attr:`Hanging.remedy` is that
outcome, or, when it cannot be known, the marker that loses nothing for choreo's records:
commit on a data partition (at worst a batch handled again after an abort shows its
outputs twice, under the same derived event ids that every inbox drops) and abort on a
``__consumer_offsets`` partition (the group then reads from its previous offsets again;
what was handled is dropped by the inbox, what was not is handled).

Needs kafka-python (``choreo[kafka-python]``) whatever the transport: confluent-kafka's
admin client has none of these APIs. Every function bounds its calls by ``timeout``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal

from choreo._extras import require
from choreo.errors import TransportError
from choreo.safety.text import printable
from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig, to_kafka_python

__all__ = [
    "CONSUMER_OFFSETS",
    "Hanging",
    "Outcome",
    "decided_outcome",
    "end_hanging",
    "end_own_hanging",
    "find_hanging",
]

logger = logging.getLogger(__name__)

CONSUMER_OFFSETS: Final = "__consumer_offsets"
"""Kafka's topic of committed consumer-group offsets (a transaction's offsets go there)."""

Outcome = Literal["commit", "abort", "unknown"]
"""What a transaction's coordinator decided for it, when that can still be known."""

_ACTIVE: Final = frozenset({"Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence"})
"""Coordinator states in which a transaction is still being ended by its coordinator."""
_MAX_PARTITIONS: Final = 100_000
"""Bound on the partitions one search describes (a cluster's metadata is outside data)."""
_UNKNOWN_TOPIC: Final = 3
"""Kafka's error code UNKNOWN_TOPIC_OR_PARTITION."""
_OWN_ATTEMPTS: Final = 3
"""Searches :func:`end_own_hanging` makes before it gives up."""
_OWN_BACKOFF_S: Final = 1.0
"""Seconds between those searches."""


@dataclass(frozen=True, slots=True)
class Hanging:
    """One transaction left open on one partition with no coordinator ending it.

    ``start_offset`` is where the open transaction begins (the partition's last stable
    offset cannot pass it); ``age`` the seconds since the producer last wrote to the
    partition; ``transactional_id`` the id the coordinator knows the producer by (None:
    it knows none); ``coordinator_state`` that id's state now (empty when unknown).
    """

    partition: TopicPartition
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    start_offset: int
    age: float
    transactional_id: str | None
    coordinator_state: str
    outcome: Outcome

    @property
    def remedy(self) -> Literal["commit", "abort"]:
        """The marker to write: the decided outcome, else the one that loses nothing."""
        if self.outcome != "unknown":
            return self.outcome
        return "abort" if self.partition.topic == CONSUMER_OFFSETS else "commit"

    def describe(self) -> str:
        """Return one line naming the partition, the producer and what ends it."""
        who = "an unknown id" if self.transactional_id is None else printable(self.transactional_id)
        state = printable(self.coordinator_state or "unknown")
        topic = printable(self.partition.topic)
        return (
            f"{topic}[{self.partition.partition}]: transaction of producer {self.producer_id} "
            f"(epoch {self.producer_epoch}, {who}) open since offset "
            f"{self.start_offset}, last write {self.age:.0f} s ago; coordinator: {state}; "
            f"decided: {self.outcome}; remedy: {self.remedy}"
        )


def decided_outcome(
    producer_id: int,
    producer_epoch: int,
    state: str,
    coordinator_producer_id: int,
    coordinator_epoch: int,
) -> Outcome:
    """Return what the coordinator decided for a hanging transaction, if its state shows it.

    It shows it only while the id's producer and epoch are still the hanging transaction's
    and the id is in a completed state: a later registration of the id (a new producer
    client), or a transaction of Kafka's transactions v2 (which bumps the epoch as it
    ends), moves the epoch, and the decision is then unknown. A later transaction of the
    same producer at the same epoch that never wrote to this partition is read as this
    one: for choreo's workers that cannot mislead on a group's offsets (every one of their
    transactions that commits offsets writes its marker to the group's partition, ending
    the hanging one there), and on a data partition :attr:`Hanging.remedy` never aborts on
    a guess anyway.
    """
    if coordinator_producer_id != producer_id or coordinator_epoch != producer_epoch:
        return "unknown"
    if state == "CompleteCommit":
        return "commit"
    if state == "CompleteAbort":
        return "abort"
    return "unknown"


@contextmanager
def _admin(config: KafkaConfig, timeout: float) -> Iterator[Any]:
    """Yield a kafka-python admin client for ``config`` (closed after), errors translated."""
    require("kafka", "kafka-python", "finding hanging transactions")
    from kafka import errors as kerr
    from kafka.admin import KafkaAdminClient

    from choreo.transports.kafka_python import _checked, _create, _fatal

    settings = _checked(
        to_kafka_python(config.common_settings()), KafkaAdminClient.DEFAULT_CONFIG, "admin"
    )
    bound = int(timeout * 1000)
    settings.update(request_timeout_ms=bound, bootstrap_timeout_ms=bound)
    admin = _create(KafkaAdminClient, settings, "admin client")
    try:
        yield admin
    except kerr.ClusterAuthorizationFailedError as exc:
        raise TransportError(
            "writing a transaction marker needs the ClusterAction permission on the cluster "
            "(as kafka-transactions.sh abort does): run `choreo transactions hanging --end` "
            f"with an administrator's credentials ({exc})",
            fatal=True,
        ) from exc
    except kerr.KafkaError as exc:
        raise TransportError(
            f"hanging transactions: {exc}", retriable=bool(exc.retriable), fatal=_fatal(exc)
        ) from exc
    finally:
        admin.close()


def _partitions(admin: Any, topics: Sequence[str] | None, *, missing_ok: bool) -> list[Any]:
    """Return the kafka-python partitions of ``topics`` (every topic when None).

    A topic that does not exist raises, or is passed over with ``missing_ok``; any other
    error of a topic raises.
    """
    from kafka.structs import TopicPartition as KafkaPartition

    found: list[Any] = []
    for topic in admin.describe_topics(list(topics) if topics is not None else None):
        code = topic.get("error_code", 0)
        if code == _UNKNOWN_TOPIC and missing_ok:
            logger.debug("no topic %s: not searched", printable(topic.get("name")))
            continue
        if code:
            raise TransportError(f"cannot describe topic {printable(topic.get('name'))!r}")
        for partition in topic["partitions"]:
            found.append(KafkaPartition(topic["name"], partition["partition_index"]))
            if len(found) > _MAX_PARTITIONS:
                raise TransportError(f"more than {_MAX_PARTITIONS} partitions to search")
    return found


def _producers(admin: Any, partitions: list[Any]) -> dict[Any, Any]:
    """Return each partition's producer states, leaving out topics this client may not read.

    One request per leader; when a topic refuses (no Read permission on it), again topic
    by topic, so the topics that may be read are still searched.
    """
    from kafka.errors import TopicAuthorizationFailedError

    try:
        return dict(admin.describe_producers(partitions))
    except TopicAuthorizationFailedError:
        pass
    by_topic: dict[str, list[Any]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp)
    found: dict[Any, Any] = {}
    for topic, topic_partitions in by_topic.items():
        try:
            found.update(admin.describe_producers(topic_partitions))
        except TopicAuthorizationFailedError:
            logger.info(
                "not allowed to describe the producers of %s: not searched", printable(topic)
            )
    return found


def find_hanging(
    config: KafkaConfig,
    topics: Sequence[str] | None = None,
    *,
    min_age: float = 60.0,
    transactional_id: str | None = None,
    timeout: float = 30.0,
    missing_ok: bool = False,
) -> list[Hanging]:
    """Return the hanging transactions on ``topics`` (every topic, internal ones included).

    A topic of ``topics`` that does not exist is an error, or passed over with ``missing_ok``.

    A partition's open transaction counts when its producer last wrote there at least
    ``min_age`` seconds ago (by the record's timestamp, the producer's clock; any time at
    all when ``min_age`` is 0) and the coordinator of its transactional id is not ending it
    (no id known for the producer, another producer for the id, the id in a completed
    state, or the partition not among its transaction's). Give ``min_age`` above the
    producers' ``transaction.timeout.ms`` plus the broker's abort check interval (10 s)
    so that a transaction the coordinator is about to time out is not listed.
    With ``transactional_id``, only that id's producer's transactions are looked at.
    """
    with _admin(config, timeout) as admin:
        own: dict[str, Any] = {}
        if transactional_id is not None:
            own = _described(admin, transactional_id)
            if not own:
                return []  # the coordinator knows no such id: it never wrote anything
        partitions = _partitions(admin, topics, missing_ok=missing_ok)
        if not partitions:
            return []
        now_ms = time.time() * 1000
        # the last write's time is the producer's clock (a record's timestamp): with no
        # minimum age it is not looked at, so a clock ahead of this one hides nothing
        oldest_ms = now_ms - min_age * 1000 if min_age > 0 else float("inf")
        open_ones: list[tuple[Any, Any]] = [
            (tp, producer)
            for tp, state in _producers(admin, partitions).items()
            for producer in state.active_producers
            if producer.current_transaction_start_offset >= 0
            and producer.last_timestamp <= oldest_ms
            and (not own or producer.producer_id == own[str(transactional_id)].producer_id)
        ]
        if not open_ones:
            return []
        if own:
            ids = {own[str(transactional_id)].producer_id: str(transactional_id)}
            descriptions = own
        else:
            ids = _transactional_ids(admin, {p.producer_id for _, p in open_ones})
            descriptions = admin.describe_transactions(sorted(set(ids.values()))) if ids else {}
        found = [
            hanging
            for tp, producer in open_ones
            if (hanging := _judge(tp, producer, ids, descriptions, now_ms)) is not None
        ]
    for hanging in found:
        logger.info("hanging transaction: %s", hanging.describe())
    return sorted(found, key=lambda h: (h.partition.topic, h.partition.partition))


def end_own_hanging(
    config: KafkaConfig,
    transactional_id: str,
    *,
    topics: Sequence[str] | None = None,
    timeout: float = 10.0,
    attempts: int = _OWN_ATTEMPTS,
) -> list[Hanging]:
    """End every hanging transaction of ``transactional_id`` with its remedy; return them.

    For a producer that has just registered ``transactional_id`` (so no transaction of
    it is live): every open one on a partition is hanging, whatever its age. With
    ``topics`` (every topic the id's transactions may write to) only their partitions and
    the consumer-offsets topic's are searched, and a topic that does not exist is passed
    over; without, every partition of the cluster is. A search
    that fails with an error Kafka calls retriable (a broker that does not answer within
    ``timeout``, a leader moving, a coordinator loading: what a cluster does right after
    a broker restart) is made again, ``attempts`` times in all, a second apart; any other
    error (a refused permission, too many partitions) is raised at once, as is the last.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _end_own(config, transactional_id, topics, timeout)
        except TransportError as exc:
            if not exc.retriable or attempt >= attempts:
                raise
            logger.info(
                "looking for hanging transactions of %s failed (attempt %d of %d), "
                "again in %.0f s: %s",
                printable(transactional_id), attempt, attempts, _OWN_BACKOFF_S, exc,
            )
            time.sleep(_OWN_BACKOFF_S)
    return []  # pragma: no cover - attempts < 1


def _end_own(
    config: KafkaConfig, transactional_id: str, topics: Sequence[str] | None, timeout: float
) -> list[Hanging]:
    """One search for ``transactional_id``'s hanging transactions, each ended; return them."""
    searched = None if topics is None else sorted({*topics, CONSUMER_OFFSETS})
    found = find_hanging(
        config,
        searched,
        min_age=0.0,
        transactional_id=transactional_id,
        timeout=timeout,
        missing_ok=topics is not None,
    )
    for hanging in found:
        end_hanging(config, hanging, commit=hanging.remedy == "commit", timeout=timeout)
    return found


def _described(admin: Any, transactional_id: str) -> dict[str, Any]:
    """Return ``{transactional_id: description}``, or {} when the coordinator knows no such id."""
    from kafka.errors import TransactionalIdNotFoundError

    try:
        return dict(admin.describe_transactions([transactional_id]))
    except TransactionalIdNotFoundError:
        return {}


def _transactional_ids(admin: Any, producer_ids: Iterable[int]) -> dict[int, str]:
    """Return the transactional id each coordinator knows each producer id by."""
    listings = admin.list_transactions(producer_id_filters=sorted(producer_ids))
    return {t.producer_id: t.transactional_id for ts in listings.values() for t in ts}


def _judge(
    tp: Any, producer: Any, ids: dict[int, str], descriptions: dict[str, Any], now_ms: float
) -> Hanging | None:
    """Return ``producer``'s open transaction on ``tp`` as a Hanging one, or None if live."""
    from kafka.structs import TopicPartition as KafkaPartition

    transactional_id = ids.get(producer.producer_id)
    description = descriptions.get(transactional_id) if transactional_id is not None else None
    state = "" if description is None else str(description.state.value)
    outcome: Outcome = "unknown"
    if description is not None:
        if (
            description.producer_id == producer.producer_id
            and state in _ACTIVE
            and KafkaPartition(tp.topic, tp.partition) in description.topic_partitions
        ):
            return None  # the coordinator is in the middle of it: it will write the marker
        outcome = decided_outcome(
            producer.producer_id,
            producer.producer_epoch,
            state,
            description.producer_id,
            description.producer_epoch,
        )
    return Hanging(
        partition=TopicPartition(tp.topic, tp.partition),
        producer_id=producer.producer_id,
        producer_epoch=producer.producer_epoch,
        coordinator_epoch=producer.coordinator_epoch,
        start_offset=producer.current_transaction_start_offset,
        age=max(0.0, (now_ms - producer.last_timestamp) / 1000),
        transactional_id=transactional_id,
        coordinator_state=state,
        outcome=outcome,
    )


def end_hanging(
    config: KafkaConfig, hanging: Hanging, *, commit: bool, timeout: float = 30.0
) -> None:
    """End ``hanging`` by writing a commit (or abort) marker to its partition's leader.

    Refused (:class:`~choreo.errors.TransportError`) when the partition no longer holds
    that producer's transaction open from ``hanging.start_offset``: the marker would end
    another transaction. Committing makes the transaction's records visible to
    ``read_committed`` readers (its consumer offsets, on ``__consumer_offsets``, become
    the group's committed ones); aborting discards them. See the module docs for which.
    """
    from kafka.admin._transactions import AbortTransactionSpec
    from kafka.structs import TopicPartition as KafkaPartition

    tp = KafkaPartition(hanging.partition.topic, hanging.partition.partition)
    with _admin(config, timeout) as admin:
        producers = admin.describe_producers([tp]).get(tp)
        still = producers is not None and any(
            p.producer_id == hanging.producer_id
            and p.producer_epoch == hanging.producer_epoch
            and p.current_transaction_start_offset == hanging.start_offset
            for p in producers.active_producers
        )
        if not still:
            raise TransportError(
                f"{printable(hanging.partition.topic)}[{hanging.partition.partition}]: "
                f"producer {hanging.producer_id} no longer holds a "
                f"transaction open from offset {hanging.start_offset}; nothing written"
            )
        spec = AbortTransactionSpec(
            topic_partition=tp,
            producer_id=hanging.producer_id,
            producer_epoch=hanging.producer_epoch,
            coordinator_epoch=hanging.coordinator_epoch,
        )
        _write_marker(admin, spec, commit=commit)
    logger.warning(
        "%s the transaction of producer %d on %s[%d] (open since offset %d)",
        "committed" if commit else "aborted",
        hanging.producer_id,
        printable(hanging.partition.topic),
        hanging.partition.partition,
        hanging.start_offset,
    )


def _write_marker(admin: Any, spec: Any, *, commit: bool) -> None:
    """Send WriteTxnMarkers for ``spec`` with the given result to the partition's leader.

    kafka-python's ``abort_transaction`` builds the request with ``transaction_result``
    False (abort) and sends it to the leader; the request is built by its
    ``_abort_transaction_request``, whose result is changed here for a commit.
    """
    build = admin._abort_transaction_request

    def request(spec_: Any) -> Any:
        built = build(spec_)
        for marker in built.markers:
            marker.transaction_result = commit
        return built

    admin._abort_transaction_request = request
    try:
        admin.abort_transaction(spec)
    finally:
        del admin._abort_transaction_request
