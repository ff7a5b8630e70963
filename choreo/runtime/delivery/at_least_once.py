"""At-least-once delivery: outbox in the store transaction, then publish, flush, commit offsets.

Guarantee: a batch's output is stored in the outbox in the same store transaction as its
inbox rows (and the handlers' own writes to ``ctx.db``); after that commit every output
record is published, the producer is flushed once, and only then are the batch's offsets
committed. A record leaves the outbox only once the broker acknowledged it (the ids are
deleted in the next batch's store transaction). Hence, with a durable store:

- SIGKILL or a lost machine at any point loses nothing: unsent outbox records are
  replayed at start-up, and records whose offsets were not committed are redelivered
  and dropped by the inbox;
- a record may be published twice (after a crash between the flush and the outbox
  cleanup) but always under the same event id, so the next inbox drops the copy;
- a broker outage makes flushes fail: the offsets are held back and the outbox is
  published again before the next poll;
- a store COMMIT that fails (a deferred constraint, a serialization failure, the
  database connection lost) rolls the whole batch back and rewinds the consumer to the
  batch's first offsets, so the batch is handled again and no later batch's offsets
  pass it;
- a rebalance commits what the revoked partitions have pending before they move;
- with ``WorkerConfig.commit_interval`` > 0, offsets are committed at most that often
  (when due, on revocation and at close): a crash redelivers what was handled since the
  last commit, and the inbox drops it.

With a memory inbox, a crash loses what the outbox held.

With ``WorkerConfig.commit_behind`` (the default) on a store that offers it (PostgreSQL,
:meth:`~choreo.store.PostgresStore.commit_behind`), a batch's COMMIT is sent and its
answer read only once the next batch was polled and handled (or before a poll that may
wait, a revocation, the close): only then is the batch published and its offsets
committed. Every statement above holds unchanged, counted from that answer: nothing is
published before its batch committed. A COMMIT that failed rolls back the batch handled
behind it too, and the consumer is rewound to the first offsets of both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final

from choreo.errors import ChoreoError, TransportError
from choreo.runtime.config import WorkerConfig
from choreo.runtime.delivery.base import Batch, DeliveryBase, DeliveryLink, Offsets
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Producer, TopicPartition, Transport
from choreo.transports.shared import publish_records

__all__ = ["AtLeastOnce"]

_EVENT_ID: Final = itemgetter(0)  # of an OutboxRecord


class AtLeastOnce(DeliveryBase):
    """Publishes each batch's stored output, flushes once, then commits its offsets.

    See the module documentation for the guarantee.
    """

    def __init__(self, transport: Transport, config: WorkerConfig, service: str) -> None:
        self.transport = transport
        self.config = config
        self.service = service
        self._producer: Producer | None = None
        self._pending: list[OutboxRecord] = []  # stored in the outbox, not yet acknowledged
        self._sent: list[str] = []  # acknowledged, deleted in the next store transaction
        self._uncommitted: Offsets = {}  # held back by a failed flush or commit_interval
        self._last_commit = float("-inf")  # time.monotonic() of the last offset commit
        self._staged: list[str] = []  # the acknowledged ids the open transaction deletes
        # a batch whose COMMIT was sent behind: its answer, the batch, the ids it deletes,
        # and the store's call reading the answer
        self._behind: tuple[Any, Batch, list[str], Callable[[], None]] | None = None
        self._rewind_due: Offsets | None = None  # a failed batch's first offsets, at tick

    @property
    def producer(self) -> Producer:
        """Return the producer (created by :meth:`open`)."""
        if self._producer is None:
            raise RuntimeError("the delivery strategy is not open")
        return self._producer

    def _new_producer(self) -> Producer:
        """Return a new producer for this strategy."""
        return self.transport.producer()

    def open(self, link: DeliveryLink) -> None:
        """Create the producer and publish the outbox records a previous run left unsent."""
        super().open(link)
        self._producer = self._new_producer()
        # a store only this process writes: its leftovers are ours to replay; on a shared
        # store other replicas' rows are in flight, and the worker's outbox relay takes
        # those left by dead ones
        self._pending = [] if link.inbox.shared else link.inbox.pending(link.origin)
        if self._pending:
            link.log.warning("replaying %d unsent outbox record(s)", len(self._pending))
            self._send({}, {})

    def tick(self) -> None:
        """Publish what a failed flush left pending; commit held-back offsets when due.

        First the rewind a batch whose COMMIT failed behind left due (after the batch
        handled meanwhile was rewound: the earlier offsets win).
        """
        if self._rewind_due is not None:
            first, self._rewind_due = self._rewind_due, None
            self.link.rewind(first)
        if self._pending or (self._uncommitted and self._commit_due()):
            self._send({}, {})

    def _commit_due(self) -> bool:
        """Return whether ``commit_interval`` has passed since the last offset commit."""
        return time.monotonic() - self._last_commit >= self.config.commit_interval

    def idle(self) -> None:
        """Delete acknowledged records from the outbox when no batch will do it."""
        if self._behind is not None:  # the worker settles before an idle poll; not here
            return
        if self._sent:
            self._forget_sent()

    def stage(self) -> None:
        """Delete the records acknowledged since the last batch from the outbox.

        Not those the transaction of a batch whose COMMIT was sent behind deletes already
        (they stay in the list until that COMMIT's answer says so, and are staged again
        if it failed).
        """
        deleting = set(self._behind[2]) if self._behind is not None else ()
        self._staged = [id_ for id_ in self._sent if id_ not in deleting]
        if self._staged:
            self.link.inbox.mark_sent(self._staged)

    def deliver(self, batch: Batch) -> None:
        """Store the output in the outbox, commit the store, publish, flush, commit offsets."""
        link = self.link
        if batch.records:
            try:
                link.inbox.enqueue(link.origin, batch.records)
            except BaseException:
                self.abandon(batch)
                raise
        behind = getattr(link.inbox, "commit_behind", None) if self.config.commit_behind else None
        settle = getattr(link.inbox, "settle_behind", None)
        try:  # a failed commit rolled the store transaction back: read the batch again
            if behind is not None and settle is not None:
                self._behind = (behind(), batch, self._staged, settle)
                return
            self.commit_store()
        except BaseException:
            link.rewind(batch.first)
            raise
        self._committed(batch, self._staged)

    @property
    def behind(self) -> bool:
        """True while a delivered batch's COMMIT answer is unread or unsettled."""
        return self._behind is not None

    def settle(self) -> Offsets | None:
        """Read the COMMIT sent behind; then publish the batch and commit its offsets.

        Returns the batch's offsets, or None when no batch waits. When the COMMIT failed
        the batch's first offsets are rewound at the next :meth:`tick` (after the batch
        handled meanwhile was rewound) and the error is raised.
        """
        if self._behind is None:
            return None
        pending, batch, staged, read = self._behind
        self._behind = None
        try:
            read()
            pending.result()
        except BaseException:
            # a failure found earlier and not rewound yet keeps its (earlier) offsets
            self._rewind_due = {**batch.first, **(self._rewind_due or {})}
            raise
        self._committed(batch, staged)
        return batch.offsets

    def _committed(self, batch: Batch, staged: list[str]) -> None:
        """The batch's store transaction committed: publish, flush, commit its offsets.

        ``staged`` are the acknowledged ids that transaction deleted from the outbox.
        """
        if staged:
            deleted = set(staged)
            self._sent = [id_ for id_ in self._sent if id_ not in deleted]
        self._pending.extend(batch.records)
        self._send(batch.offsets, batch.first)

    def _send(self, offsets: Offsets, first: Offsets, *, force: bool = False) -> None:
        """Publish every pending record, flush once, then commit ``offsets``.

        With a ``commit_interval``, offsets are held back until it passed since the last
        commit (``force``: commit now).
        """
        producer = self.producer
        pending = self._pending
        if pending:
            try:
                publish_records(producer, pending)
                producer.flush(self.config.flush_timeout)
            except TransportError:
                self._uncommitted.update(offsets)
                raise
            self._sent.extend(map(_EVENT_ID, pending))
            self._pending = []
        if self._uncommitted:
            offsets = {**self._uncommitted, **offsets}
            self._uncommitted = {}
        if not offsets:
            return
        if force or self._commit_due():
            self._last_commit = time.monotonic()
            self._commit(offsets)
        else:
            self._uncommitted = offsets

    def _commit(self, offsets: Offsets) -> None:
        """Commit consumer offsets; a failure is logged (the records come back, deduplicated)."""
        try:
            self.link.consumer.commit(offsets)
        except TransportError as exc:
            self.link.log.warning("offset commit failed (records will be redelivered): %s", exc)

    def _forget_sent(self) -> None:
        """Delete acknowledged records from the outbox in a small transaction of their own."""
        inbox = self.link.inbox
        inbox.begin()
        try:
            inbox.mark_sent(self._sent)
        except BaseException:
            inbox.rollback()
            raise
        inbox.commit()
        self._sent = []

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Publish what is pending and commit the offsets held back for ``partitions``.

        A batch whose COMMIT was sent behind was settled by the worker first (published,
        its offsets committed; if that COMMIT failed, the batch goes back to the
        partitions' next owner, its offsets not committed).
        """
        revoked = set(partitions)
        held = {tp: o for tp, o in self._uncommitted.items() if tp in revoked}
        if not held and not self._pending:
            return
        try:
            if self._pending:
                self._send({}, {})
                return
        except TransportError as exc:
            self.link.log.warning("could not deliver pending records on revoke: %s", exc)
            if not self.link.inbox.durable:
                return
        held = {tp: o for tp, o in self._uncommitted.items() if tp in revoked}
        for tp in held:
            del self._uncommitted[tp]
        if held:
            self._commit(held)

    def close(self) -> None:
        """Deliver unsent records and forget acknowledged ones (best effort), close the producer."""
        if self._link is not None:
            try:  # a batch whose COMMIT was sent behind was settled by the worker
                if self._pending or self._uncommitted:
                    self._send({}, {}, force=True)
                if self._sent:
                    self._forget_sent()
            except Exception as exc:
                self.link.log.warning(
                    "could not finish pending work at close (kept for restart): %s", exc
                )
        if self._producer is not None:
            try:
                self._producer.close()
            except ChoreoError as exc:
                self.link.log.warning("closing %s failed: %s", type(self._producer).__name__, exc)
