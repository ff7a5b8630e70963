"""Waiting until topics can take records: every partition online on its leader.

Creating a topic is asynchronous. The controller commits it, then each broker applies the
new metadata and creates the logs of the partitions it leads; the topic's name, and even
its partitions' leaders, show in metadata before the leader can append to them. A produce
request that arrives in that window fails with ``NOT_LEADER_OR_FOLLOWER`` (or
``UNKNOWN_TOPIC_OR_PARTITION``) and is retried, which on brokers before Apache Kafka 4.5
can lose records without any error (KAFKA-15591): an idempotent producer has up to five
requests in flight per connection; when the first one fails in that window and a later
one arrives just after the partition came online, the broker, which holds no state for
that producer on the partition, accepts the later one whatever its first sequence
number. The first request's records are then below the sequence the broker expects and
are never appended; in the run that lost them, librdkafka's flush returned without an
error, so the outbox deleted them as acknowledged.

:func:`wait_until_online` (confluent-kafka) and :func:`wait_until_online_kafka_python`
close the window for the topics choreo creates: they return once every partition's leader
answered a ``ListOffsets`` request, which a broker serves from the same local partition a
produce request appends to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Final

import confluent_kafka as ck
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # OffsetSpec: not in __all__
    AdminClient,
    OffsetSpec,
)

__all__ = ["wait_until_online", "wait_until_online_kafka_python"]

logger = logging.getLogger(__name__)

_RETRY_S: Final = 0.05
"""Seconds between two rounds of asking the partitions not online yet."""
_ROUND_S: Final = 5.0
"""Seconds one round (metadata, then ListOffsets) may take at most."""
_CANNOT_ASK: Final = frozenset(
    {
        ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ck.KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        ck.KafkaError.UNSUPPORTED_VERSION,
    }
)
"""ListOffsets errors that waiting does not cure: the topic counts as online (not checked)."""
_LATEST: Final[Callable[[], OffsetSpec]] = OffsetSpec.latest  # the spec of a partition's end


def wait_until_online(admin: AdminClient, topics: Collection[str], timeout: float) -> list[str]:
    """Wait until every partition of ``topics`` answers on its leader; return the late topics.

    Returns the topics (sorted) that were still not online after ``timeout`` seconds: a
    topic missing from metadata, a partition without a leader, or one whose leader does
    not serve it yet. A principal not allowed to ask (``ListOffsets`` needs ``Describe``)
    cannot tell, and its topics count as online.
    """
    return _wait(lambda waiting, limit: _online(admin, waiting, limit), topics, timeout)


def wait_until_online_kafka_python(
    admin: Any, topics: Collection[str], timeout: float
) -> list[str]:
    """As :func:`wait_until_online`, with a kafka-python ``KafkaAdminClient``."""
    return _wait(lambda waiting, limit: _online_kp(admin, waiting, limit), topics, timeout)


def _wait(
    online: Callable[[set[str], float], set[str]], topics: Collection[str], timeout: float
) -> list[str]:
    """Ask ``online(waiting, limit)`` in rounds until every topic is online or time is up."""
    started = time.monotonic()
    deadline = started + timeout
    waiting = set(topics)
    rounds = 0
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        rounds += 1
        waiting -= online(waiting, min(remaining, _ROUND_S))
        if waiting:
            time.sleep(_RETRY_S)
    if rounds > 1:
        logger.debug(
            "waited %.2f s (%d rounds) for %d topic(s) to be online on their leaders",
            time.monotonic() - started,
            rounds,
            len(topics),
        )
    return sorted(waiting)


def _online(admin: AdminClient, topics: Collection[str], timeout: float) -> set[str]:
    """Return the topics among ``topics`` whose every partition answered on its leader now."""
    try:
        # every topic's metadata: asking for some by name would create them on a broker
        # with auto.create.topics.enable
        metadata = admin.list_topics(timeout=timeout)
    except ck.KafkaException as exc:
        logger.debug("no metadata yet: %s", exc)
        return set()
    partitions: dict[ck.TopicPartition, OffsetSpec] = {}
    candidates: set[str] = set()
    for name in topics:
        found = metadata.topics.get(name)
        if found is None or found.error is not None or not found.partitions:
            continue
        if any(p.leader < 0 for p in found.partitions.values()):
            continue
        candidates.add(name)
        for number in found.partitions:
            partitions[ck.TopicPartition(name, number)] = _LATEST()
    if not partitions:
        return set()
    try:
        futures = admin.list_offsets(partitions, request_timeout=timeout)
    except ck.KafkaException as exc:
        logger.debug("cannot ask the partitions' leaders yet: %s", exc)
        return set()
    for tp, future in futures.items():
        try:
            future.result(timeout=timeout + 1.0)
        except ck.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, ck.KafkaError) else None
            if code in _CANNOT_ASK:
                logger.debug("cannot check that %s is online: %s", tp.topic, exc)
                continue
            candidates.discard(tp.topic)
        except TimeoutError:
            candidates.discard(tp.topic)
    return candidates


def _online_kp(admin: Any, topics: Collection[str], timeout: float) -> set[str]:
    """Return the topics whose every partition answered on its leader (kafka-python)."""
    import kafka.errors as kerr
    from kafka.admin import OffsetSpec
    from kafka.structs import TopicPartition

    try:
        described = admin.describe_topics(topics=sorted(topics))
    except kerr.KafkaError as exc:
        logger.debug("no metadata yet: %s", exc)
        return set()
    candidates: set[str] = set()
    specs: dict[Any, Any] = {}
    for topic in described:
        name, partitions = topic.get("name"), topic.get("partitions") or ()
        if name not in topics or topic.get("error_code") or not partitions:
            continue
        if any(p.get("error_code") or p.get("leader_id", -1) < 0 for p in partitions):
            continue
        candidates.add(name)
        for p in partitions:
            specs[TopicPartition(name, p["partition_index"])] = OffsetSpec.LATEST
    if not specs:
        return set()
    try:
        admin.list_partition_offsets(specs, timeout_ms=int(timeout * 1000))
    except (kerr.TopicAuthorizationFailedError, kerr.ClusterAuthorizationFailedError) as exc:
        logger.debug("cannot check that %s are online: %s", sorted(candidates), exc)
    except kerr.KafkaError as exc:
        logger.debug("partitions not online yet: %s", exc)
        return set()
    return candidates
