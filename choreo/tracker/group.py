"""Tracker instances in one consumer group, materializing saga summaries to a compacted topic.

Every choreo event is keyed by its correlation id, so all events of a saga are in the
same partition *number* of every topic (Kafka's default partitioner, topics of equal
partition counts). A :class:`TrackerGroupMember` joins a consumer group whose members
use the ``range`` assignor, which gives each member the same partition numbers of every
topic: the member owns the sagas of its partition numbers. It folds them with one
:class:`~choreo.tracker.tracker.Tracker` per partition number and, every
``commit_interval`` seconds, writes the summaries of the sagas that changed
(:mod:`choreo.tracker.summaries`) to the **summary topic** (compacted, as many partitions
as the event topics, keyed by correlation id: a saga's summary lands in the partition
number of its events) together with its consumer offsets, in ONE Kafka transaction.
The CLI (``--summaries``) and the viewer read that topic instead of folding the log.

How the work is kept to about one fold and one summary per saga:

- **Record-time order.** The event topics are one per event type and the client fetches
  every partition at about the same byte rate, so rare types would be read far ahead of
  common ones. The member pauses the partitions whose records run more than
  ``align_window_ms`` ahead of the slowest one (:class:`~choreo.tracker.pacing.TimeAlignment`),
  so a saga's events are read close together.
- **Folded at the commit.** Records are fed with ``settle=False``; each saga fed since
  the last commit is folded once, at the commit.
- **Written when settled.** A saga that ended is written at the next commit; a running
  one at the commit after the one that saw it change (sooner if it ends), and the
  committed offsets stay below its unwritten events until then
  (:meth:`~choreo.tracker.materializing.Materializing.take_settled`). At a revocation
  and at a stop every change is written.

Guarantees, each proven on a real broker: ``tests/tracker/test_group_kafka.py`` the first
two, ``test_group_zombie_kafka.py`` the zombie, ``test_group_broker_restart_kafka.py`` the
broker restart, and ``test_group_rebalance_kafka.py`` the commit at a revocation while a
member joins:

- **Rebalance**: a partition's new owner loads that partition's summaries (reading the
  summary partition up to a marker it writes itself, so it has read everything committed
  before it) and reads the event partitions from the group's committed offsets. The
  summaries and the offsets were committed atomically, so it resumes exactly where the
  last commit left; instances added or removed mid-run leave the summaries equal to a
  single-process fold of the same log (stuck marks aside: they depend on when the
  deadline was checked).
- **SIGKILL or a lost machine**: the open transaction is aborted, so readers
  (``read_committed``) never see its summaries; the next owner re-reads the events after
  the last commit (including those of running sagas held back from it). Work since the
  last commit is repeated, never lost, and the summaries come out the same (events are
  deduplicated by id); the counters (``records``, ``events``) may count the re-read
  events of the held-back sagas a second time.
- **A zombie** (an instance that lost its partitions without noticing, e.g. stalled past
  ``max.poll.interval.ms`` while its client kept heartbeating): its commit carries the
  group membership it had (member id and generation), which the group coordinator
  refuses (KIP-447; ``UNKNOWN_MEMBER_ID`` once the client has dropped its member id), so
  the transaction aborts: none of its summaries and none of its offsets are visible,
  and the summaries of the partitions' new owner stand (a commit refused as the
  instance stops ends it with that error).
- **A broker restart** (SIGKILLed and restarted on its data): a commit that fails is
  retried at the next interval (a producer that hung in a transactional call is replaced
  first; another fatal error stops the instance); nothing committed
  is lost, the instance reads on from its committed offsets, and the summaries equal a
  fresh fold of the whole log. The topics' replication decides what survives a broker
  lost for good.

A rebalance costs each member a reload of the summaries of the partitions it gets (the
eager ``range`` protocol revokes every partition first): about as long as reading that
many records. At a revocation the member commits what it folded (summaries, stats and
offsets, still one transaction) while the whole group waits for it; librdkafka never
times out the group-coordinator request of ``send_offsets_to_transaction``
(confluentinc/librdkafka issues 5456 and 5511), so a coordinator error met there can
leave the call waiting for good (seen once: a 35 s stall when a second instance joined a
1,000,000-saga rebuild). That commit's offsets are therefore bounded by
:data:`REVOKE_OFFSETS_TIMEOUT`: past it the transaction is abandoned (never visible:
nothing of it is committed), the next owner re-reads from the last commit, and the
member replaces its producer after the callback, so the rebalance waits seconds at most
instead of the transport's 35 s bound plus a producer registration.

Dead-letter notes stay in the memory of the instance that read them (as
in a single tracker's checkpoint); the counters of each partition are materialized too.

Why one module of over 500 lines: a member's consumer callbacks, its alignment calls and
its transactional commit share one state (what was fed, held back and written since the
last commit) that must change together; loading summaries (:mod:`~choreo.tracker.summaryload`)
and pacing (:mod:`~choreo.tracker.pacing`) already live apart.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from choreo.errors import ChoreoError, ConfigurationError, TransactionError, TransportError
from choreo.tracker.pacing import (
    CATCH_UP_CHECK_S,
    DEFAULT_WINDOW_MS,
    TimeAlignment,
    catching_up,
)
from choreo.tracker.summaries import (
    DEFAULT_SUMMARY_TOPIC,
    KIND_HEADER,
    SAGA,
    STATS,
    control_key,
)
from choreo.tracker.summaryload import read_summary_partitions
from choreo.tracker.tracker import Tracker
from choreo.transports.admin import create_compacted_topic, partition_count, with_range_assignor
from choreo.transports.base import (
    Consumer,
    Record,
    TopicPartition,
    TransactionalProducer,
    Transport,
    supports_transactions,
)
from choreo.transports.partitioner import partition_for
from choreo.transports.replication import check_replication

__all__ = ["GROUP_KEEP_FINISHED", "TrackerGroupMember"]

logger = logging.getLogger(__name__)

_SAGA_HEADERS: Final = ((KIND_HEADER, SAGA),)
_STATS_HEADERS: Final = ((KIND_HEADER, STATS),)
GROUP_KEEP_FINISHED: Final = 10_000
"""``choreo tracker run``'s ``keep_finished`` per partition (finished sagas kept unpacked)."""
_PLACEMENT_CHECKS: Final = 8
"""Records per event partition whose key is checked against the summary topic's layout."""
FETCH_BYTES: Final = 64 * 1024
"""The members' ``max.partition.fetch.bytes`` (unless configured): a saga's events are on
one topic per event type, so the finer the partitions interleave in a poll, the closer
together its events arrive; it is then folded, and its summary written, about once
instead of once per event (the client's 1 MiB default spreads them over ~100k records)."""


REVOKE_OFFSETS_TIMEOUT: Final = 5.0
"""Seconds the offsets of the commit at a revocation may take (``send_offsets_to_transaction``;
the rest of the group waits for it). A healthy broker answers in milliseconds, but
librdkafka's coordinator requests are never timed out (issues 5456 and 5511 of
confluentinc/librdkafka): one that met a coordinator error can wait for good, and the
transport then abandons the producer only after this plus its grace. The commit is then
aborted and the next owner re-reads from the last commit."""


PREFETCH_KBYTES: Final = 4096
"""What the members' confluent consumers fetch ahead (``queued.max.messages.kbytes``,
unless configured) while partitions are aligned: a paused partition's fetched records are
dropped and fetched again on resume, so the less is fetched ahead, the less is wasted
(librdkafka's default, 64 MiB, is a whole rebuild's worth of some topics)."""


class TrackerGroupMember:
    """One tracker instance of a group: folds its partitions, materializes their summaries.

    ``topics`` (names) take precedence over ``topics_pattern`` (a regular expression
    starting with ``^``; the summary topic is never folded even when it matches).
    ``new_tracker`` makes the tracker of each owned partition number (the choreography,
    deadlines and clock go there). ``partitions`` is the summary topic's partition
    count when it has to be created (default: the most partitions of the event topics);
    ``replication_factor`` and ``min_insync_replicas`` its replication, as for the
    services' topics (None: the cluster's defaults; an existing summary topic with less
    gets a warning, see :func:`~choreo.transports.admin.create_compacted_topic`).
    Call :meth:`run` on a thread of your own, or :meth:`start` for a daemon thread.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        group_id: str,
        summary_topic: str = DEFAULT_SUMMARY_TOPIC,
        topics: Sequence[str] | None = None,
        topics_pattern: str = "^[^_].*",
        instance_id: str | None = None,
        new_tracker: Callable[[], Tracker] = Tracker,
        partitions: int | None = None,
        commit_interval: float = 2.0,
        deadline_interval: float = 1.0,
        batch_size: int = 20_000,
        poll_timeout: float = 0.5,
        load_timeout: float = 300.0,
        align_window_ms: int = DEFAULT_WINDOW_MS,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
    ) -> None:
        if not group_id.strip():
            raise ConfigurationError("a tracker group needs a non-empty group id")
        check_replication(replication_factor, min_insync_replicas)
        self.replication = {
            "replication_factor": replication_factor,
            "min_insync_replicas": min_insync_replicas,
        }
        """The summary topic's replication when choreo creates it (None: the cluster's)."""
        self.transport = transport
        self.group_id = group_id
        self.summary_topic = summary_topic
        self.topics = [t for t in topics or () if t != summary_topic]
        self.topics_pattern = topics_pattern
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.new_tracker = new_tracker
        self.requested_partitions = partitions
        self.commit_interval = commit_interval
        self.deadline_interval = deadline_interval
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.load_timeout = load_timeout
        self.partitions = 0
        """The summary topic's partition count (known once running)."""
        self.trackers: dict[int, Tracker] = {}
        """The tracker of each owned partition number."""
        self.committed: dict[TopicPartition, int] = {}
        """The offsets of the last commit (each the next offset to read)."""
        self.commits = 0
        self.revocation_commits = 0
        """Commits made at a revocation that wrote summaries or offsets."""
        self.renewals = 0
        """How many times the producer was replaced after it failed fatally (a hung call)."""
        self.written = 0
        """Saga summary records written (a saga is written again when it changes later)."""
        self.loads = 0
        """How many times this member loaded partitions (once per rebalance that gave some)."""
        self.error: BaseException | None = None
        """The exception that ended :meth:`run`, if one did."""
        self._stop = threading.Event()
        self._assigned_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: TransactionalProducer | None = None
        self._assigned: set[TopicPartition] = set()
        self._pending: set[int] = set()
        self._checked: dict[TopicPartition, int] = {}
        self._problem: ChoreoError | None = None
        self._renew = False  # the producer failed fatally: replace it before its next use
        self.alignment = TimeAlignment(align_window_ms)
        """Which event partitions are paused to read in record-time order (see pacing)."""

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> TrackerGroupMember:
        """Run the member on a daemon thread; return self."""
        if self._thread is not None:
            raise RuntimeError("this member was already started")
        self._thread = threading.Thread(target=self._run_logged, name="choreo-tracker-member",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the member to commit, leave the group and stop; wait for it (when started)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the member's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def progress(self) -> dict[TopicPartition, int]:
        """Return the committed offsets of the partitions this member owns now."""
        assigned = set(self._assigned)
        return {tp: offset for tp, offset in self.committed.items() if tp in assigned}

    def wait_assigned(self, timeout: float = 30.0) -> bool:
        """Block until the member owns partitions and has loaded them; False on timeout."""
        return self._assigned_event.wait(timeout)

    def _run_logged(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self.error = exc
            logger.exception("tracker member %s stopped", self.instance_id)

    def run(self) -> None:
        """Fold and materialize until :meth:`stop`; commit and leave the group at the end.

        Raises :class:`~choreo.errors.ConfigurationError` when the event topics are not
        partitioned like the summary topic, and the transport's errors when it fails.
        """
        self.partitions = self._prepare_summary_topic()
        self._producer = self._new_producer()
        ranged = with_range_assignor(
            self.transport, fetch_bytes=FETCH_BYTES,
            prefetch_kbytes=PREFETCH_KBYTES if self.alignment.enabled else None,
        )
        consumer = ranged.consumer(self.group_id)
        self._consumer = consumer
        subscription = self.topics or [self.topics_pattern]
        try:
            consumer.subscribe(subscription, on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._loop(consumer)
            self._renew_if_failed()
            self._commit()
            logger.info(
                "tracker member %s stops: %d commits, %d saga summaries written, "
                "%d partition pauses", self.instance_id, self.commits, self.written,
                self.alignment.pauses,
            )
        finally:
            try:
                consumer.close(leave_group=True)
            finally:
                self._producer.close()

    def _loop(self, consumer: Consumer) -> None:
        next_deadlines = next_commit = last_deadlines = time.monotonic()
        next_commit += self.commit_interval
        while not self._stop.is_set():
            records = consumer.poll(self.batch_size, self.poll_timeout)
            if self._problem is not None:
                raise self._problem
            self._renew_if_failed()
            if self._pending:
                self._load(consumer)
            ready = records
            if self.alignment.enabled:
                ready = self._align(consumer, records)
            if ready:
                self._feed(ready)
            now = time.monotonic()
            behind = catching_up(records, self.batch_size)
            if now >= next_deadlines and (not behind or now >= last_deadlines + CATCH_UP_CHECK_S):
                for tracker in self.trackers.values():
                    tracker.settle()
                    tracker.check_deadlines()
                next_deadlines = now + self.deadline_interval
                last_deadlines = now
            if now >= next_commit:
                self._commit_or_retry()
                next_commit = now + self.commit_interval

    def _align(self, consumer: Consumer, records: list[Record]) -> list[Record]:
        """Return the records to fold now; pause the partitions that ran ahead, resume others."""
        alignment = self.alignment
        ready = alignment.release(records)
        pause, resume = alignment.decide()
        assigned = self._assigned
        pause = [tp for tp in pause if tp in assigned]
        resume = [tp for tp in resume if tp in assigned]
        if pause:
            consumer.pause(pause)
        if resume:
            consumer.resume(resume)
        return ready

    def _commit_or_retry(self) -> None:
        """Commit; a transport error that is not fatal is retried at the next interval.

        A producer that hung in a transactional call (after a broker restart) is replaced
        first, as at a revocation; another fatal error (a newer producer with this
        member's transactional id, refused authorization) ends the member.
        """
        try:
            self._commit(defer=True)
        except TransportError as exc:
            if exc.fatal and not _hung(exc):
                raise
            self._renew = self._renew or exc.fatal
            logger.warning("tracker commit failed, retried in %.1f s: %s",
                           self.commit_interval, exc)

    def _prepare_summary_topic(self) -> int:
        """Create the summary topic when missing; return its partition count."""
        count = partition_count(self.transport, self.summary_topic)
        if count is not None:
            if any(v is not None for v in self.replication.values()):  # compared, warned if less
                create_compacted_topic(
                    self.transport, self.summary_topic, partitions=count, **self.replication
                )
            return count
        wanted = self.requested_partitions or self._event_partitions() or 1
        create_compacted_topic(
            self.transport, self.summary_topic, partitions=wanted, **self.replication
        )
        logger.info("created the summary topic %s (%d partitions, compacted)",
                    self.summary_topic, wanted)
        return partition_count(self.transport, self.summary_topic) or wanted

    def _event_partitions(self) -> int:
        """Return the most partitions among the event topics that exist now (0 for none)."""
        names = self.topics
        if not names:
            pattern = re.compile(self.topics_pattern)
            names = [t for t in self.transport.list_topics()
                     if pattern.search(t) and t != self.summary_topic]
        counts = [partition_count(self.transport, name) or 0 for name in names]
        return max(counts, default=0)

    # --- rebalances ----------------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Note the new partitions; their summaries are loaded by the loop, outside the callback."""
        events = [tp for tp in partitions if tp.topic != self.summary_topic]
        self._assigned = set(events)
        self.alignment.reset(events)
        numbers = {tp.partition for tp in events}
        outside = sorted(n for n in numbers if n >= self.partitions)
        if outside:
            self._problem = ConfigurationError(
                f"event partitions {outside} have no summary partition: the summary topic "
                f"{self.summary_topic!r} has {self.partitions}; give every event topic and "
                "the summary topic the same partition count"
            )
        self._pending = numbers - set(self.trackers)
        if not self._pending:
            self._assigned_event.set()
        logger.info("tracker member %s got partitions %s", self.instance_id, sorted(numbers))

    def _new_producer(self) -> TransactionalProducer:
        """Return this member's transactional producer (a new one fences any older one)."""
        producer = self.transport.producer(
            transactional_id=f"choreo-tracker.{self.group_id}.{self.instance_id}"
        )
        if not supports_transactions(producer) or not isinstance(producer, TransactionalProducer):
            producer.close()
            raise ConfigurationError("a tracker group needs a transport with transactions")
        return producer

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit what the revoked partitions hold, then forget them (their next owner loads).

        The rest of the group waits for this callback (the eager protocol), so the commit's
        offsets get :data:`REVOKE_OFFSETS_TIMEOUT`. A commit that fails leaves the next
        owner to re-read from the last commit (the summaries and the offsets were not
        written, or were written together: one transaction); one whose producer hung (a call
        the client never returned from) has it replaced by the loop, outside the callback,
        so the rebalance does not also wait for the new producer's registration; another
        fatal error is raised by the loop and ends the member.
        """
        numbers = {tp.partition for tp in partitions if tp.topic != self.summary_topic}
        try:
            if self._commit(offsets_timeout=REVOKE_OFFSETS_TIMEOUT):
                self.revocation_commits += 1
        except ChoreoError as exc:
            logger.warning("commit at revocation failed (the next owner re-reads): %s", exc)
            if _hung(exc):
                self._renew = True
            elif isinstance(exc, TransportError) and exc.fatal:
                self._problem = exc  # raised by the loop, outside the callback
        self._assigned -= set(partitions)
        self._unpause(partitions)
        self.alignment.reset(partitions)
        kept = {tp.partition for tp in self._assigned}
        for number in numbers - kept:
            self.trackers.pop(number, None)
        self._pending -= numbers - kept
        self._assigned_event.clear()

    def _unpause(self, partitions: list[TopicPartition]) -> None:
        """Resume the revoked partitions alignment paused: librdkafka keeps a partition's
        pause across a reassignment, and a partition assigned again must be read."""
        paused = [tp for tp in partitions if tp in self.alignment.paused]
        if paused and self._consumer is not None:
            try:
                self._consumer.resume(paused)
            except ChoreoError as exc:
                logger.warning("cannot resume %d revoked partitions: %s", len(paused), exc)

    def _load(self, consumer: Consumer) -> None:
        """Load the summaries of the pending partition numbers (see the module docstring)."""
        wanted = sorted(self._pending)
        self._pending = set()
        started = time.monotonic()
        fresh = {number: self._fresh_tracker() for number in wanted}
        loaded = self._read_summaries(fresh)
        self.trackers.update(fresh)
        self.loads += 1
        self._assigned_event.set()
        logger.info(
            "tracker member %s loaded %d saga summaries of partitions %s in %.1f s",
            self.instance_id, loaded, wanted, time.monotonic() - started,
        )

    def _fresh_tracker(self) -> Tracker:
        tracker = self.new_tracker()
        tracker.track_changes()
        return tracker

    def _read_summaries(self, fresh: dict[int, Tracker]) -> int:
        """Read the summary partitions of ``fresh`` up to a marker of ours; return the sagas."""
        producer = self._producer
        assert producer is not None
        return read_summary_partitions(
            self.transport, producer, topic=self.summary_topic, group_id=self.group_id,
            partitions=self.partitions, fresh=fresh, batch_size=self.batch_size,
            timeout=self.load_timeout,
        )

    # --- folding and committing -------------------------------------------------------

    def _feed(self, records: list[Record]) -> None:
        by_number: dict[int, list[Record]] = {}
        summary_topic = self.summary_topic
        for record in records:
            if record.topic == summary_topic:
                continue
            by_number.setdefault(record.partition, []).append(record)
        for number, batch in by_number.items():
            tracker = self.trackers.get(number)
            if tracker is None:  # revoked while polling: its next owner reads it
                continue
            self._check_placement(batch)
            tracker.feed_many(batch, settle=False)  # running sagas: re-folded at the commit

    def _check_placement(self, batch: list[Record]) -> None:
        """Check the first records of each partition land where their summaries will."""
        checked = self._checked
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            done = checked.get(tp, 0)
            if done >= _PLACEMENT_CHECKS:
                continue
            checked[tp] = done + 1
            key = record.key
            if key and partition_for(key, self.partitions) != record.partition:
                raise ConfigurationError(
                    f"topic {record.topic!r} is not partitioned like the summary topic "
                    f"{self.summary_topic!r} ({self.partitions} partitions): give every "
                    "event topic the summary topic's partition count"
                )

    def _commit(self, *, defer: bool = False, offsets_timeout: float = 30.0) -> bool:
        """Write the changed summaries, the stats and the offsets in one transaction.

        With ``defer`` (the periodic commits) a running saga that changed is written at
        the next commit but one (:meth:`~choreo.tracker.materializing.Materializing.take_settled`),
        and the offsets stop below its events until it is; at a revocation or a stop
        every change is written. ``offsets_timeout`` bounds ``send_offsets_to_transaction``.
        Returns False when there was nothing to commit.
        """
        producer, consumer = self._producer, self._consumer
        if producer is None or consumer is None or not self.trackers:
            return False
        held: dict[TopicPartition, int] = {}
        taken: dict[int, tuple[list[str], list[tuple[bytes, bytes]]]] = {}
        for number, tracker in self.trackers.items():
            tracker.settle()
            if defer:
                cids, records, lowest = tracker.take_settled(self.committed)
                taken[number] = (cids, records)
                held.update(lowest)
            else:
                taken[number] = tracker.take_summaries()
        offsets: dict[TopicPartition, int] = {}
        for tracker in self.trackers.values():
            offsets.update(
                (tp, min(offset, held.get(tp, offset)))
                for tp, offset in tracker.offsets().items()
                if tp in self._assigned
            )
        moved = {tp: o for tp, o in offsets.items() if self.committed.get(tp) != o}
        if not moved and not any(records for _, records in taken.values()):
            return False
        try:
            producer.begin_transaction()
            for number, (_, records) in taken.items():
                for key, value in records:
                    producer.publish(self.summary_topic, value, key=key, headers=_SAGA_HEADERS)
                if not records and not any(tp.partition == number for tp in moved):
                    continue
                producer.publish(
                    self.summary_topic,
                    self.trackers[number].stats_record(),
                    key=control_key(STATS, number, self.partitions),
                    headers=_STATS_HEADERS,
                )
            producer.send_offsets_to_transaction(offsets, consumer, offsets_timeout)
            producer.commit_transaction()
        except ChoreoError:
            self._abort()
            for number, (cids, _) in taken.items():
                self.trackers[number].retake(cids)
            raise
        self.committed.update(offsets)
        self.commits += 1
        self.written += sum(len(records) for _, records in taken.values())
        return True

    def _renew_if_failed(self) -> None:
        """Replace the producer when a commit found it hung in a transactional call.

        A replacement that cannot register raises (the member stops, as on any fatal
        error): a member without a producer can neither load nor commit.
        """
        if self._renew:
            self._renew = False
            self._renew_producer()

    def _renew_producer(self) -> None:
        """Replace a producer that failed fatally (its open transaction is aborted).

        The replacement registers first: its registration aborts the old producer's open
        transaction; the old one is closed after, without fencing the id again (the
        transport knows a newer producer registered it).
        """
        old = self._producer
        self._producer = self._new_producer()
        self.renewals += 1
        logger.warning(
            "tracker member %s replaced its producer (a transactional call hung)", self.instance_id
        )
        if old is not None:
            try:
                old.close()
            except ChoreoError as exc:
                logger.debug("closing the failed producer failed too: %s", exc)

    def _abort(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            producer.abort_transaction()
        except ChoreoError as exc:
            logger.debug("abort after a failed commit failed too: %s", exc)


def _hung(exc: BaseException) -> bool:
    """Return True for a transactional call the client never returned from (see
    :class:`~choreo.errors.TransactionError`): a new producer is the remedy."""
    return isinstance(exc, TransactionError) and exc.hung
