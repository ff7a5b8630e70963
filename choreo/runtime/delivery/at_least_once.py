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
- a rebalance commits what the revoked partitions have pending before they move;
- with ``WorkerConfig.commit_interval`` > 0, offsets are committed at most that often
  (when due, on revocation and at close): a crash redelivers what was handled since the
  last commit, and the inbox drops it.

With a memory inbox, a crash loses what the outbox held.

On a store that sends its COMMIT behind (:meth:`~choreo.store.PostgresStore.commit_behind`),
the worker's loop (:meth:`~choreo.runtime.Worker.run`) does not wait for a batch's COMMIT:
it polls and handles the next batch on the store's other connection, and the batch is
published and its offsets committed once the answer says it committed (when the next
batch is delivered, when a poll finds nothing, at a revocation, at close). The
guarantee above holds as it is: nothing is published before its COMMIT returned, a
batch's offsets are committed after its records, batches are published in order, and
the next batch's handlers see the previous batch's writes (its first ``ctx.db`` waits
for the answer). A COMMIT that fails rolls its whole batch back; the next batch, open
meanwhile, is rolled back too, and the consumer rewinds to the failed batch's first
offsets. A SIGKILL with a COMMIT in flight leaves the batch committed (its outbox rows
are published by a live replica's relay) or not (its records are read again), as a
SIGKILL during a waited-for COMMIT does. :meth:`~choreo.runtime.Worker.run_once` waits
for its batch's delivery before it returns.
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Final

from choreo.errors import ChoreoError, TransportError
from choreo.runtime.config import WorkerConfig
from choreo.runtime.delivery.base import Batch, DeliveryBase, DeliveryLink, Offsets
from choreo.store.outbox import OutboxRecord
from choreo.store.pg_commit import SentCommit
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
        # a batch whose COMMIT was sent behind: (its answer, the batch, the ids its
        # transaction deleted from the outbox)
        self._behind: tuple[SentCommit, Batch, list[str]] | None = None

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

        A batch whose COMMIT was sent behind is delivered now if its answer has arrived.
        """
        if self._behind is not None and self._behind[0].ready():
            self._settle()
        if self._pending or (self._uncommitted and self._commit_due()):
            self._send({}, {})

    def _commit_due(self) -> bool:
        """Return whether ``commit_interval`` has passed since the last offset commit."""
        return time.monotonic() - self._last_commit >= self.config.commit_interval

    def idle(self) -> None:
        """Deliver a batch whose COMMIT was sent behind; delete acknowledged records from
        the outbox when no batch will do it."""
        self._settle()
        if self._sent:
            self._forget_sent()

    def stage(self) -> None:
        """Delete the records acknowledged since the last batch from the outbox."""
        if self._sent:
            self.link.inbox.mark_sent(self._sent)

    def deliver(self, batch: Batch) -> None:
        """Store the output in the outbox, commit the store, publish, flush, commit offsets.

        On a store that sends its COMMIT behind (PostgreSQL), the batch is delivered
        when the answer is read (:meth:`_settle`): at the next batch's delivery, when a
        poll finds nothing (:meth:`idle`), at a revocation or at close.
        """
        link = self.link
        # the ids stage() wrote into this transaction; publishing the previous batch
        # below acknowledges more, which a later transaction deletes
        staged = len(self._sent)
        if self._behind is not None:  # the previous batch first: its records go out first
            failed_first = self._behind[1].first
            try:
                committed = self._read_behind(always_raise=True)
            except BaseException:  # it was rolled back: this one goes too, and both again
                self.abandon(batch)
                link.rewind(failed_first)  # the earlier batch's offsets win
                raise
            try:
                if committed is not None:
                    self._delivered(committed)
            except BaseException:  # kept pending (published at the next tick); this one later
                self.abandon(batch)
                raise
        if batch.records:
            try:
                link.inbox.enqueue(link.origin, batch.records)
            except BaseException:
                self.abandon(batch)
                raise
        commit_behind = getattr(link.inbox, "commit_behind", None)
        try:  # a failed commit rolled the store transaction back: read the batch again
            if commit_behind is not None:
                sent = commit_behind()
            else:
                self.commit_store()
        except BaseException:
            link.rewind(batch.first)
            raise
        if commit_behind is not None:
            self._behind = (sent, batch, self._sent[:staged])
            del self._sent[:staged]
            return
        del self._sent[:staged]
        self._delivered(batch)

    def _delivered(self, batch: Batch) -> None:
        """Publish the committed batch's records, flush, commit its offsets, tell the worker."""
        self._pending.extend(batch.records)
        self._send(batch.offsets, batch.first)
        if batch.delivered is not None:
            batch.delivered()

    def finish(self) -> None:
        """Deliver the batch whose COMMIT was sent behind, if any."""
        self._settle()

    @property
    def in_flight(self) -> bool:
        """Whether a batch's COMMIT was sent behind and its records are not published yet."""
        return self._behind is not None

    def _settle(self) -> None:
        """Read the COMMIT sent behind; deliver its batch, or rewind to it if it failed."""
        committed = self._read_behind()
        if committed is not None:
            self._delivered(committed)

    def _read_behind(self, *, always_raise: bool = False) -> Batch | None:
        """Read the COMMIT sent behind; return its batch once it committed, else None.

        A failed COMMIT rolled the whole batch back: its acknowledged ids are deleted by
        a later transaction instead, the consumer is rewound to the batch's first offsets
        and the error is raised, unless the store raised it to the worker already (where
        the next batch first needed the answer) and ``always_raise`` is False.
        """
        behind = self._behind
        if behind is None:
            return None
        self._behind = None
        sent, batch, acknowledged = behind
        try:
            sent.result()
        except BaseException:
            self._sent = acknowledged + self._sent
            self.link.rewind(batch.first)
            if sent.reported and not always_raise:
                self.link.log.debug("a batch's COMMIT failed (reported already); rewound")
                return None
            raise
        return batch

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
        """Publish what is pending and commit the offsets held back for ``partitions``."""
        try:
            self._settle()  # a batch whose COMMIT was sent behind: delivered before they go
        except Exception as exc:  # rewound: the partitions' new owner reads it again
            self.link.log.warning("could not deliver the last batch on revoke: %s", exc)
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
            try:
                self._settle()
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
