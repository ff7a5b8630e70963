"""Worker settings: batch size, group, retries, dead letters, exactly-once, concurrency, relay.

Kafka client tuning (acks, idempotence, isolation level) is the transport's job (see
:mod:`choreo.transports.config`); these are the runtime's own knobs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from choreo.choreography.service import Retry
from choreo.errors import ConfigurationError
from choreo.model.envelope import now_ms
from choreo.model.topics import DeadLetterNaming, TopicNaming, deadletter_topic, topic_for
from choreo.runtime.retry import COMPENSATION_RETRY, DEFAULT_RETRY
from choreo.transports.replication import check_replication

__all__ = ["WorkerConfig", "topic_replication"]

_WEEK = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a :class:`~choreo.runtime.worker.Worker` polls, retries, commits and names topics.

    - ``group_id``: the consumer group (default: the service's name).
    - ``max_poll_records`` / ``poll_timeout``: the size of a polled batch and how long a
      poll waits for one. A batch is handled in one local transaction and one flush.
    - ``retry`` / ``compensation_retry``: the default budgets of steps and compensations
      that declare none.
    - ``topic_naming`` / ``deadletter_naming``: event type -> topic, service -> dead-letter
      topic.
    - ``instance_id``: a stable id of this replica of the service (e.g. the pod name),
      unique within the group. The consumer becomes a static group member (Kafka's
      ``group.instance.id``): a worker restarted after a crash or SIGKILL gets its
      partitions back at once instead of waiting for the dead member's session to expire
      (45 s by default), and a clean restart triggers no rebalance. It also suffixes the
      default ``transactional_id``. None (the default): a dynamic member.
    - ``leave_group_on_close``: a static member that closes cleanly also leaves its group,
      so the other replicas get its partitions at once instead of after the session
      timeout (default True; False keeps them for a restart with the same instance id).
    - ``exactly_once``: publish each batch's output and offsets in one Kafka transaction
      (see :mod:`choreo.runtime.delivery.transactional`). ``transactional_id`` defaults to
      ``choreo.<service>.<group>.<instance_id>``, or ``...<host name>`` without an
      instance id: one per replica. Two live processes with the same transactional id
      fence each other: the older one stops with a :class:`~choreo.errors.FatalError`
      saying so; give every replica its own ``instance_id``.
    - ``concurrency``: with N > 1, the partitions of a batch are handled in a pool of N
      threads; handlers then get ``ctx.db = None`` (see :mod:`choreo.runtime.worker`).
    - ``inbox_retention``: seconds an inbox row is kept (None: forever); pruning runs at
      most every ``prune_interval`` seconds.
    - ``tracing``: propagate W3C ``traceparent`` to emitted events.
    - ``create_topics`` / ``topic_partitions``: create the topics the worker reads and
      writes at start-up (existing ones are left alone).
    - ``topic_replication_factor`` / ``topic_min_insync_replicas``: the replication of
      the topics it creates (None: the cluster's ``default.replication.factor`` and the
      broker's ``min.insync.replicas``); a cluster with fewer live brokers than either
      asks for stops the start with a :class:`~choreo.errors.ConfigurationError` when a
      topic is to be created (see :mod:`choreo.transports.replication`).
    - ``from_beginning``: where a group without committed offsets starts.
    - ``flush_timeout`` / ``transaction_timeout``: seconds to wait for the broker.
    - ``commit_interval``: at-least-once delivery commits the consumer offsets of handled
      batches at most every this many seconds (default 1 s; 0: after every batch). Each
      commit is a request and a write to the broker's ``__consumer_offsets`` log: with
      commit-per-batch they were a third of a saga's broker requests, and committing at
      most once a second cut the broker's CPU per saga to 0.78x at a steady 100 sagas/s
      and 0.32x in a burst, with a lower p99 (``bench/bench_broker_cost.py``), hence the
      default. A crash then redelivers the
      records handled since the last commit (the inbox drops them); offsets held back are
      committed when due, before a rebalance revokes their partitions, and at close.
      Exactly-once delivery commits offsets in every batch's transaction and ignores it.
    - ``error_backoff``: seconds :meth:`Worker.run` backs off after a retriable
      infrastructure error, polling with its partitions paused (the group never
      rebalances because of it).
    - ``clock_ms``: the time source, in epoch milliseconds, stamped on emitted and start
      events as their produced-at time (which the tracker's deadlines count from) and on
      inbox rows (default: the wall clock; the test kit's virtual clock replaces it).
    - ``max_inline_backoff``: a handler retry whose backoff is at most this many seconds
      waits in line (its batch waits); a longer one is deferred: the record's partition
      is rewound to it and paused until the backoff is over while the worker keeps
      polling, so a long backoff never exceeds ``max.poll.interval.ms``.
    - ``commit_behind``: at-least-once delivery on a store that can (PostgreSQL) sends a
      batch's COMMIT and reads its answer only after the next batch was polled and
      handled, then publishes the batch: the database commits one batch while the
      worker handles the next. A batch's output then goes out up to one batch later
      (at once when no next batch is waiting). False: every batch waits for its COMMIT.
    - ``relay_interval`` / ``relay_min_age`` / ``relay_batch``: the outbox relay of a
      shared store (:class:`~choreo.store.relay.OutboxRelay`, run by every worker on
      one, in both delivery modes) looks for rows no live writer will publish every
      ``relay_interval`` seconds, takes only rows at least ``relay_min_age`` seconds old
      (None: 5 s on a shared store, where the writer may be a live replica about to
      publish them itself) and claims about ``relay_batch`` records per round. Its
      flushes wait ``flush_timeout``. A shorter interval and age publish a dead
      replica's rows sooner at the cost of more outbox queries; an age shorter than a
      batch's publish time (with ``commit_behind``, the time to handle the next batch as
      well) makes live replicas' rows go out twice (same event ids, so inboxes drop the
      copies).
    """

    group_id: str | None = None
    max_poll_records: int = 500
    poll_timeout: float = 1.0
    retry: Retry = DEFAULT_RETRY
    compensation_retry: Retry = COMPENSATION_RETRY
    topic_naming: TopicNaming = field(default=topic_for)
    deadletter_naming: DeadLetterNaming = field(default=deadletter_topic)
    exactly_once: bool = False
    transactional_id: str | None = None
    instance_id: str | None = None
    concurrency: int = 1
    inbox_retention: float | None = _WEEK
    prune_interval: float = 600.0
    tracing: bool = True
    create_topics: bool = True
    topic_partitions: int = 1
    topic_replication_factor: int | None = None
    topic_min_insync_replicas: int | None = None
    from_beginning: bool = True
    flush_timeout: float = 30.0
    transaction_timeout: float = 30.0
    commit_interval: float = 1.0
    commit_behind: bool = True
    error_backoff: float = 1.0
    max_inline_backoff: float = 1.0
    leave_group_on_close: bool = True
    relay_interval: float = 1.0
    relay_min_age: float | None = None
    relay_batch: int = 500
    clock_ms: Callable[[], int] = field(default=now_ms, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_poll_records < 1:
            raise ConfigurationError("WorkerConfig.max_poll_records must be at least 1")
        if self.poll_timeout < 0:
            raise ConfigurationError("WorkerConfig.poll_timeout must be >= 0")
        if self.concurrency < 1:
            raise ConfigurationError("WorkerConfig.concurrency must be at least 1")
        if self.topic_partitions < 1:
            raise ConfigurationError("WorkerConfig.topic_partitions must be at least 1")
        check_replication(self.topic_replication_factor, self.topic_min_insync_replicas)
        if self.inbox_retention is not None and self.inbox_retention <= 0:
            raise ConfigurationError("WorkerConfig.inbox_retention must be positive or None")
        if self.group_id is not None and not self.group_id:
            raise ConfigurationError("WorkerConfig.group_id must not be empty")
        if self.commit_interval < 0:
            raise ConfigurationError("WorkerConfig.commit_interval must be >= 0")
        if self.max_inline_backoff < 0 or self.error_backoff < 0:
            raise ConfigurationError("WorkerConfig backoffs must be >= 0")
        if self.instance_id is not None and not self.instance_id:
            raise ConfigurationError("WorkerConfig.instance_id must not be empty (or None)")
        if not self.relay_interval > 0 or self.relay_batch < 1:
            raise ConfigurationError(
                "WorkerConfig.relay_interval must be positive and relay_batch at least 1"
            )
        if self.relay_min_age is not None and not self.relay_min_age >= 0:
            raise ConfigurationError("WorkerConfig.relay_min_age must be >= 0 (or None)")

    def group_for(self, service: str) -> str:
        """Return the consumer group id of ``service``'s worker."""
        return self.group_id or service

    def transactional_id_for(self, service: str) -> str:
        """Return the transactional id of this replica's exactly-once producer for ``service``.

        The given ``transactional_id``, else derived from the group and the instance id (or
        the host name without one), so each replica has its own and a restarted replica
        fences its previous incarnation.
        """
        if self.transactional_id:
            return self.transactional_id
        replica = self.instance_id or socket.gethostname() or "local"
        return f"choreo.{service}.{self.group_for(service)}.{replica}"


def topic_replication(config: WorkerConfig) -> dict[str, int]:
    """Return the replication keywords of ``Transport.create_topics`` that ``config`` sets.

    Only the ones asked for, so a transport written before they existed still works
    for a worker that leaves them at the cluster's defaults.
    """
    asked = {
        "replication_factor": config.topic_replication_factor,
        "min_insync_replicas": config.topic_min_insync_replicas,
    }
    return {name: value for name, value in asked.items() if value is not None}
