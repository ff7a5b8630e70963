"""The kafka-python transport: pure Python, portable, slower than confluent-kafka.

Settings come from :class:`~choreo.transports.config.KafkaConfig` in librdkafka naming
and are renamed by :func:`~choreo.transports.config.to_kafka_python`; a name
kafka-python does not know is a :class:`~choreo.errors.ConfigurationError`.

Producers are idempotent with ``acks='all'``; the futures of records published since
the last flush are kept and checked by :meth:`KafkaPythonProducer.flush`. Consumers
never auto-commit, read committed records only and do not auto-create topics. A
consumer created with an ``instance_id`` is a static member (kafka-python's
``group_instance_id``, KIP-345): closing it sends no LeaveGroup, so its replacement
gets the same partitions back.
Transactions use kafka-python's transactional producer (KIP-98, with KIP-447 group
metadata).

kafka-python 3 runs rebalance listeners on its network thread, where a blocking call
such as ``commit`` is refused. This transport therefore runs ``on_assign`` and
``on_revoke`` on a short-lived helper thread while the network thread waits for it,
so the callbacks may commit and seek like on the other transports. The thread that
called ``poll`` (or ``close``) is blocked meanwhile, so callbacks never run
concurrently with it.

Why one module of over 500 lines: it holds one producer and one consumer class for one
client library, the only place that imports kafka-python; the behaviour both share with
the other transports is in :mod:`choreo.transports.shared`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import kafka
import kafka.errors as kerr
from kafka.admin import KafkaAdminClient
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.future import Future
from kafka.structs import MemberState, OffsetAndMetadata

from choreo.errors import (
    CommitError,
    ConfigurationError,
    DeliveryError,
    TransactionError,
    TransportError,
)
from choreo.transports import kafka_python_logs
from choreo.transports.base import (
    Consumer,
    Headers,
    RebalanceCallback,
    Record,
    TopicPartition,
    make_record,
)
from choreo.transports.config import KafkaConfig, to_kafka_python
from choreo.transports.existing_topics import check_existing, read_kafka_python
from choreo.transports.kafka_python_build import build
from choreo.transports.membership import remove_static_member
from choreo.transports.readiness import wait_until_online_kafka_python
from choreo.transports.replication import check_brokers, check_replication, replication_configs
from choreo.transports.shared import ConsumerBase, ProducerBase, require_group_id

__all__ = ["KafkaPythonConsumer", "KafkaPythonProducer", "KafkaPythonTransport"]

logger = logging.getLogger(__name__)
kafka_python_logs.install()  # its close race is one DEBUG line, not an ERROR traceback

_ClientT = TypeVar("_ClientT")

_TOPIC_ALREADY_EXISTS: Final = 36
_COMMIT_TIMEOUT_MS: Final = 30_000
_ADMIN_TIMEOUT_MS: Final = 30_000
_CLOSE_FLUSH_TIMEOUT: Final = 10.0
_ASSIGNORS: Final[Mapping[str, type[Any]]] = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}
_FATAL_TRANSACTION_ERRORS: Final = (
    kerr.ProducerFencedError,
    kerr.InvalidProducerEpochError,
    kerr.TransactionalIdAuthorizationFailedError,
    kerr.AuthorizationError,
    kerr.UnsupportedVersionError,
)


def _checked(settings: dict[str, object], known: Iterable[str], role: str) -> dict[str, object]:
    """Return ``settings`` unchanged, or raise ConfigurationError naming unknown keywords."""
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigurationError(f"kafka-python has no {role} setting(s) {', '.join(unknown)}")
    return settings


def _retriable(exc: BaseException) -> bool:
    """Return True when kafka-python marks ``exc`` as retriable."""
    return bool(getattr(exc, "retriable", False))


_FATAL_ERRORS: Final = tuple(
    getattr(kerr, name)
    for name in (
        "AuthenticationFailedError",
        "SaslAuthenticationFailedError",
        "TopicAuthorizationFailedError",
        "GroupAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "TransactionalIdAuthorizationFailedError",
    )
    if hasattr(kerr, name)
)


def _fatal(exc: BaseException) -> bool:
    """Return True for errors retrying cannot fix (refused authentication or authorization)."""
    return isinstance(exc, _FATAL_ERRORS)


def _create(factory: Callable[..., _ClientT], settings: dict[str, object], role: str) -> _ClientT:
    """Create a client from ``settings``, translating kafka-python's errors."""
    try:
        return build(factory, settings)
    except kerr.KafkaConfigurationError as exc:
        raise ConfigurationError(f"invalid {role} settings: {exc}") from exc
    except kerr.KafkaError as exc:
        raise TransportError(f"cannot create {role}: {exc}", retriable=_retriable(exc)) from exc


def _millis(seconds: float) -> int:
    """Return ``seconds`` as a kafka-python timeout: whole milliseconds, at least one."""
    return max(1, int(seconds * 1000))


def _to_choreo(partitions: Iterable[kafka.TopicPartition]) -> list[TopicPartition]:
    """Convert kafka-python partitions into a sorted list of choreo partitions."""
    return sorted(TopicPartition(p.topic, p.partition) for p in partitions)


def _to_offsets(
    offsets: Mapping[TopicPartition, int],
) -> dict[kafka.TopicPartition, OffsetAndMetadata]:
    """Convert choreo offsets (each the next offset to read) into kafka-python's form."""
    return {
        kafka.TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
        for tp, offset in offsets.items()
    }


class KafkaPythonProducer(ProducerBase):
    """A kafka-python producer; see the module docstring for its guarantees."""

    def __init__(self, config: KafkaConfig, transactional_id: str | None = None) -> None:
        super().__init__(transactional_id)
        settings = _checked(
            to_kafka_python(config.producer_settings(transactional_id)),
            kafka.KafkaProducer.DEFAULT_CONFIG,
            "producer",
        )
        self._futures: list[tuple[str, Any]] = []  # (topic, future) since the last flush
        self._producer = _create(kafka.KafkaProducer, settings, "producer")
        if transactional_id is not None:
            self._transaction_call(self._producer.init_transactions, "init_transactions")

    def _produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> None:
        """Send one record and keep its future for the next flush."""
        try:
            future = self._producer.send(topic, value=value, key=key, headers=list(headers))
        except kerr.IllegalStateError as exc:
            raise TransactionError(f"cannot publish: {exc}") from exc
        except (kerr.KafkaError, ValueError) as exc:
            self._record_failure(topic, str(exc), _retriable(exc))
            return
        self._futures.append((topic, future))

    def flush(self, timeout: float | None = None) -> None:
        """Wait for queued records; raise DeliveryError naming failures since the last flush."""
        self._check_open()
        try:
            self._producer.flush(timeout=timeout)
        except kerr.KafkaTimeoutError as exc:
            pending = sum(1 for _, f in self._futures if not f.is_done)
            raise DeliveryError(
                f"{pending} record(s) still unacknowledged after {timeout}s", retriable=True
            ) from exc
        futures, self._futures = self._futures, []
        for topic, future in futures:
            if future.failed():
                self._record_failure(topic, str(future.exception), _retriable(future.exception))
        self._raise_failures()

    # --- transactions ----------------------------------------------------------------

    def _transaction_call(self, call: Callable[..., object], what: str, *args: object) -> None:
        """Run one transactional call, translating errors with their flags."""
        try:
            call(*args)
        except (kerr.KafkaError, RuntimeError) as exc:
            manager = getattr(self._producer, "_transaction_manager", None)
            fatal = isinstance(exc, _FATAL_TRANSACTION_ERRORS) or bool(
                manager is not None and manager.has_fatal_error()
            )
            abortable = not fatal and bool(manager is not None and manager.has_abortable_error())
            raise TransactionError(
                f"{what} failed: {exc}",
                retriable=_retriable(exc),
                abortable=abortable,
                fatal=fatal,
            ) from exc

    def begin_transaction(self) -> None:
        """Begin a transaction."""
        self._check_transactional()
        self._transaction_call(self._producer.begin_transaction, "begin_transaction")

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: Consumer, timeout: float = 30.0
    ) -> None:
        """Add the consumer group's offsets to the current transaction.

        kafka-python takes no timeout here; ``timeout`` is accepted for the protocol.
        """
        self._check_transactional()
        if not isinstance(consumer, KafkaPythonConsumer):
            raise TransactionError("offsets need a consumer of the kafka-python transport")
        metadata = consumer._client().group_metadata()
        self._transaction_call(
            self._producer.send_offsets_to_transaction,
            "send_offsets_to_transaction",
            _to_offsets(offsets),
            metadata,
        )

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Commit the current transaction (kafka-python takes no timeout here)."""
        self._check_transactional()
        self._transaction_call(self._producer.commit_transaction, "commit_transaction")
        self._futures = []

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Abort the current transaction; its records' failures are forgotten."""
        self._check_transactional()
        try:
            self._transaction_call(self._producer.abort_transaction, "abort_transaction")
        finally:
            self._futures = []
            self._reset_failures()

    def close(self) -> None:
        """Flush what is queued (best effort, bounded) and release the client."""
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.flush(timeout=_CLOSE_FLUSH_TIMEOUT)
        except kerr.KafkaError as exc:
            logger.warning("producer closed with records unacknowledged: %s", exc)
        failed = self._failures + sum(1 for _, f in self._futures if f.failed())
        if failed:
            logger.warning("producer closed with %d failed record(s)", failed)
        self._producer.close(timeout=_CLOSE_FLUSH_TIMEOUT)


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]  # untyped base class
    """Forward kafka-python's rebalance events to the consumer's callbacks off the IO thread."""

    def __init__(self, owner: KafkaPythonConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[kafka.TopicPartition]) -> None:
        """Run the user's on_revoke for a non-empty revocation, then end its pauses.

        A pause ends with the assignment: kafka-python would keep it, and a partition
        assigned again later would stay paused for good (see the confluent transport).
        """
        callback = self._owner._on_revoke
        if revoked and callback is not None:
            await self._owner._run_callback(callback, _to_choreo(revoked))
        if revoked:
            client = self._owner._consumer
            try:
                client.resume(*revoked)
            except (kerr.KafkaError, KeyError, ValueError, TypeError) as exc:
                logger.debug("resuming revoked partitions: %s", exc)

    async def on_partitions_assigned(self, assigned: set[kafka.TopicPartition]) -> None:
        """Run the user's on_assign with the new assignment (possibly empty)."""
        callback = self._owner._on_assign
        if callback is not None:
            await self._owner._run_callback(callback, _to_choreo(assigned))

    async def on_partitions_lost(self, lost: set[kafka.TopicPartition]) -> None:
        """Treat lost partitions as revoked (the protocol has one revocation callback)."""
        await self.on_partitions_revoked(lost)


class KafkaPythonConsumer(ConsumerBase[kafka.KafkaConsumer]):
    """A kafka-python consumer-group member; see the module docstring."""

    def __init__(
        self,
        config: KafkaConfig,
        group_id: str,
        *,
        from_beginning: bool = True,
        instance_id: str | None = None,
    ) -> None:
        settings = to_kafka_python(
            config.consumer_settings(
                group_id, from_beginning=from_beginning, instance_id=instance_id
            )
        )
        settings.setdefault("allow_auto_create_topics", False)
        strategy = settings.get("partition_assignment_strategy")
        if isinstance(strategy, str):
            settings["partition_assignment_strategy"] = self._assignors(strategy)
        _checked(settings, kafka.KafkaConsumer.DEFAULT_CONFIG, "consumer")
        super().__init__(_create(kafka.KafkaConsumer, settings, "consumer"))
        self._config = config
        self._group_id = group_id
        self._instance_id = instance_id
        self._callbacks_idle = threading.Event()
        self._callbacks_idle.set()
        self._subscribed = False

    @staticmethod
    def _assignors(strategy: str) -> tuple[type[Any], ...]:
        """Map librdkafka's ``partition.assignment.strategy`` names to kafka-python assignors."""
        names = [name.strip() for name in strategy.split(",") if name.strip()]
        unknown = [name for name in names if name not in _ASSIGNORS]
        if unknown or not names:
            raise ConfigurationError(
                f"kafka-python transport supports assignors {sorted(_ASSIGNORS)}, not {strategy!r}"
            )
        return tuple(_ASSIGNORS[name] for name in names)

    async def _run_callback(
        self, callback: RebalanceCallback, partitions: list[TopicPartition]
    ) -> None:
        """Run ``callback`` on a helper thread and wait for it without blocking the IO loop."""
        net = getattr(self._consumer, "_net", None)
        if net is None or threading.current_thread() is not getattr(net, "_io_thread", None):
            callback(partitions)  # no separate IO thread: blocking calls are allowed here
            return
        done = Future()

        def work() -> None:
            try:
                callback(partitions)
            except BaseException as exc:  # handed to kafka-python, which logs and re-raises
                net.call_soon_threadsafe(lambda error=exc: done.failure(error))
            else:
                net.call_soon_threadsafe(lambda: done.success(None))
            finally:
                self._callbacks_idle.set()

        self._callbacks_idle.clear()
        threading.Thread(target=work, name="choreo-rebalance-callback", daemon=True).start()
        await done

    def _subscribe(self, client: kafka.KafkaConsumer, topics: Sequence[str]) -> None:
        """Subscribe with a listener that runs on_assign/on_revoke off the IO thread."""
        patterns = [t for t in topics if t.startswith("^")]
        listener = _Listener(self)
        try:
            if patterns:
                exact = [f"^{re.escape(t)}$" for t in topics if not t.startswith("^")]
                pattern = "|".join(f"(?:{p})" for p in [*patterns, *exact])
                client.subscribe(pattern=pattern, listener=listener)
            else:
                client.subscribe(topics=list(topics), listener=listener)
            # Refresh metadata now, so the first join already knows the partitions;
            # otherwise the group rebalances again as soon as the metadata arrives.
            client.topics()
        except (kerr.KafkaError, ValueError, TypeError) as exc:
            raise TransportError(f"subscribe failed: {exc}") from exc
        self._subscribed = True

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout`` seconds."""
        client = self._client()
        try:
            batches = client.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except kerr.KafkaError as exc:
            raise TransportError(
                f"poll failed: {exc}", retriable=_retriable(exc), fatal=_fatal(exc)
            ) from exc
        finally:
            self._callbacks_idle.wait()
        if self._subscribed:
            self._keep_rejoining(client)
        records: list[Record] = []
        append = records.append
        new = make_record
        for batch in batches.values():
            for r in batch:
                raw = r.headers
                headers: tuple[tuple[str, bytes], ...] = ()
                if raw:
                    headers = tuple((k, v if v is not None else b"") for k, v in raw)
                append(new(r.topic, r.partition, r.offset, r.key, r.value, headers, r.timestamp))
        return records

    @staticmethod
    def _keep_rejoining(client: kafka.KafkaConsumer) -> None:
        """Keep an unfinished rebalance going across polls (works around a kafka-python bug).

        kafka-python 3.0 can start a rejoin because metadata changed without marking the
        group as needing one; if ``poll`` times out while that join is in flight, the
        next poll no longer sees a rejoin is needed, never completes the join, stops
        heartbeating and fetches nothing again. While the member is rebalancing we
        therefore request the rejoin explicitly; an in-flight join is awaited again, not
        restarted.
        """
        if client.group_metadata().state == MemberState.REBALANCING:
            coordinator = getattr(client, "_coordinator", None)
            if coordinator is not None:
                coordinator.request_rejoin()

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronously commit offsets (each the next offset to read) for the group."""
        client = self._client()
        if not offsets:
            return
        try:
            client.commit(offsets=_to_offsets(offsets), timeout_ms=_COMMIT_TIMEOUT_MS)
        except kerr.CommitFailedError as exc:
            raise CommitError(f"commit failed: {exc}", retriable=False) from exc
        except (kerr.KafkaError, RuntimeError) as exc:
            raise CommitError(
                f"commit failed: {exc}", retriable=_retriable(exc), fatal=_fatal(exc)
            ) from exc

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next poll of an assigned ``partition`` start at ``offset``."""
        client = self._client()
        try:
            client.seek(kafka.TopicPartition(partition.topic, partition.partition), offset)
        except (kerr.KafkaError, AssertionError, ValueError) as exc:
            raise TransportError(f"cannot seek {partition} to {offset}: {exc}") from exc

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop fetching from assigned ``partitions`` until :meth:`resume`."""
        client = self._client()
        try:
            client.pause(*[kafka.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        except (kerr.KafkaError, AssertionError, ValueError, TypeError) as exc:
            raise TransportError(f"cannot pause {list(partitions)}: {exc}") from exc

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch from paused ``partitions`` again."""
        client = self._client()
        try:
            client.resume(*[kafka.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        except (kerr.KafkaError, AssertionError, ValueError, TypeError) as exc:
            raise TransportError(f"cannot resume {list(partitions)}: {exc}") from exc

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions currently assigned to this consumer."""
        return _to_choreo(self._client().assignment())

    def _leave_group(self) -> None:
        """Remove this static member from its group, so the others take its partitions now."""
        if self._instance_id is not None:
            remove_static_member(self._config, self._group_id, self._instance_id)

    def high_watermarks(
        self, partitions: Sequence[TopicPartition], timeout: float = 2.0
    ) -> dict[TopicPartition, int]:
        """Return the end of each partition, asked of the brokers in one bounded call.

        The end is the offset a ``read_committed`` consumer (choreo's default) stops
        before: the last stable offset, below the first record of a transaction still
        open, or the high watermark when none is (kafka-python's ``end_offsets`` asks
        with the consumer's isolation level; ``read_uncommitted`` gives the high
        watermark). One ListOffsets request per partition leader, the whole call bounded
        by ``timeout`` seconds however many partitions there are; on a broker error or
        past ``timeout`` nothing is returned. Used by catch-up reads
        (:mod:`choreo.transports.catchup`) and consumer lag
        (:mod:`choreo.observability.metrics`).
        """
        client = self._client()
        wanted = [kafka.TopicPartition(tp.topic, tp.partition) for tp in partitions]
        if not wanted:
            return {}
        try:
            ends = client.end_offsets(wanted, timeout_ms=_millis(timeout))
        except (kerr.KafkaError, AssertionError, ValueError) as exc:
            logger.debug("no end offsets: %s", exc)
            return {}
        return {TopicPartition(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    def positions(
        self, partitions: Sequence[TopicPartition], timeout: float = 2.0
    ) -> dict[TopicPartition, int]:
        """Return the position (next offset to read) of each assigned partition of ``partitions``.

        Used by catch-up reads (:mod:`choreo.transports.catchup`). A position the client
        does not hold is asked of the broker, partition by partition: ``timeout`` seconds
        bound them all, and the partitions not reached by then are left out.
        """
        client = self._client()
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout
        for tp in partitions:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                position = client.position(
                    kafka.TopicPartition(tp.topic, tp.partition), timeout_ms=_millis(left)
                )
            except (kerr.KafkaError, AssertionError, ValueError) as exc:
                logger.debug("no position of %s: %s", tp, exc)
                continue
            if position is not None and position >= 0:
                found[tp] = int(position)
        return found

    def _close_client(self) -> None:
        """Close the client (a dynamic member leaves the group), logging any error."""
        try:
            self._consumer.close(autocommit=False)
        except (kerr.KafkaError, RuntimeError) as exc:
            logger.warning("error while closing consumer: %s", exc)


class KafkaPythonTransport:
    """The transport for one Kafka cluster through kafka-python."""

    name = "kafka-python"

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config

    def producer(self, *, transactional_id: str | None = None) -> KafkaPythonProducer:
        """Return a new idempotent producer (transactional when ``transactional_id`` is given)."""
        return KafkaPythonProducer(self.config, transactional_id)

    def consumer(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> KafkaPythonConsumer:
        """Return a new consumer in ``group_id``; static (``group_instance_id``) with an id."""
        require_group_id(group_id)
        return KafkaPythonConsumer(
            self.config, group_id, from_beginning=from_beginning, instance_id=instance_id
        )

    def _admin(self) -> KafkaAdminClient:
        """Return a new admin client (admin calls are rare; each closes its own)."""
        settings = _checked(
            to_kafka_python(self.config.common_settings()),
            KafkaAdminClient.DEFAULT_CONFIG,
            "admin",
        )
        try:
            return build(KafkaAdminClient, settings)
        except kerr.KafkaError as exc:
            raise TransportError(f"cannot connect admin client: {exc}", retriable=True) from exc

    def create_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int = 1,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
        configs: Mapping[str, str] | None = None,
    ) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are).

        Replication as :meth:`Transport.create_topics <choreo.transports.base.Transport.
        create_topics>` says: checked against the cluster's live brokers first.
        ``configs`` are further topic configs of the created topics (e.g. compaction).
        """
        if not topics:
            return
        check_replication(replication_factor, min_insync_replicas)
        admin = self._admin()
        try:
            # only for a topic to be created: with every topic there, a broker down (a
            # rolling restart of the cluster) must not stop a replica's restart
            asked = replication_factor is not None or min_insync_replicas is not None
            if asked and not set(topics) <= set(admin.list_topics()):
                brokers = len(admin.describe_cluster().get("brokers", ()))
                check_brokers(brokers, replication_factor, min_insync_replicas)
            factor = -1 if replication_factor is None else replication_factor
            configs = {**(configs or {}), **replication_configs(min_insync_replicas)}
            request = {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": factor,
                    **({"configs": configs} if configs else {}),
                }
                for name in topics
            }
            result = admin.create_topics(request, timeout_ms=_ADMIN_TIMEOUT_MS, raise_errors=False)
            existing: list[str] = []
            for topic in result.get("topics", ()):
                code = topic.get("error_code", 0)
                if code == _TOPIC_ALREADY_EXISTS:
                    existing.append(str(topic.get("name")))
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    error = kerr.for_code(code)
                    if error is kerr.InvalidReplicationFactorError:
                        raise ConfigurationError(
                            f"cannot create topic {topic.get('name')!r}: "
                            f"{topic.get('error_message') or error.__name__}"
                        )
                    raise TransportError(
                        f"cannot create topic {topic.get('name')!r}: {error.__name__}"
                        f" {topic.get('error_message') or ''}".rstrip(),
                        retriable=bool(getattr(error, "retriable", False)),
                    )
            admin.wait_for_topics(list(topics), timeout_ms=_ADMIN_TIMEOUT_MS)
            # leaders in metadata are not enough: see choreo.transports.readiness
            late = wait_until_online_kafka_python(admin, topics, _ADMIN_TIMEOUT_MS / 1000)
            if late:
                logger.warning(
                    "topic(s) %s not online on their leaders within %.0f s: records produced "
                    "to them now may be lost by a broker before Kafka 4.5 (KAFKA-15591)",
                    ", ".join(late[:10]), _ADMIN_TIMEOUT_MS / 1000,
                )
            check_existing(
                lambda: read_kafka_python(admin, existing),
                existing,
                replication_factor,
                min_insync_replicas,
            )
        except kerr.KafkaError as exc:
            raise TransportError(f"cannot create topics: {exc}", retriable=_retriable(exc)) from exc
        finally:
            admin.close()

    def partition_count(self, topic: str) -> int | None:
        """Return how many partitions ``topic`` has; None when it does not exist.

        Asked by name with automatic topic creation off, so the question creates nothing.
        """
        admin = self._admin()
        try:
            found = admin.describe_topics([topic])
        except kerr.KafkaError as exc:
            raise TransportError(
                f"cannot read the metadata of {topic!r}: {exc}", retriable=_retriable(exc)
            ) from exc
        finally:
            admin.close()
        for entry in found:
            if entry.get("name") == topic and not entry.get("error_code"):
                return len(entry.get("partitions") or ()) or None
        return None

    def list_topics(self) -> list[str]:
        """Return the names of the topics that exist (internal ``__`` topics excluded)."""
        admin = self._admin()
        try:
            names = admin.list_topics()
        except kerr.KafkaError as exc:
            raise TransportError(f"cannot list topics: {exc}", retriable=_retriable(exc)) from exc
        finally:
            admin.close()
        return sorted(name for name in names if not name.startswith("__"))

    def close(self) -> None:
        """Do nothing: admin clients are closed after each call (present for symmetry)."""
