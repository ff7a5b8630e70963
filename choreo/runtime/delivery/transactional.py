"""Transactional delivery (exactly-once): a batch's output and offsets in one Kafka transaction.

Each batch is delivered by ONE Kafka transaction {publish every output record, send the
batch's offsets, commit}, and the batch's store transaction (its inbox rows and the
handlers' writes to ``ctx.db``) commits only after that Kafka transaction committed.
Outputs are not kept in the outbox: the Kafka transaction is what makes them durable.

Guarantee (read_committed consumers downstream):

- every input record's outputs appear exactly once in the log, together with the
  commit of its offset: a crash (SIGKILL, lost machine) before the Kafka commit aborts the
  transaction (the restarted replica's producer, with the same transactional id, fences
  and aborts it) and the batch is handled again from the committed offsets; after it,
  the offsets are committed with the outputs and nothing is handled again;
- retries included: a failed transaction is aborted (or its producer recreated), the
  store transaction rolled back and the consumer rewound, so the batch is handled again
  and its outputs and offsets go out in one new transaction; a failed transaction never
  leaves the inbox committed while its outputs were not;
- a rebalance needs nothing: offsets only ever move with their outputs;
- a fenced producer (another live process with the same transactional id: give each
  replica its own ``instance_id``) or a fatal client error stops the worker with a
  :class:`~choreo.errors.FatalError` instead of fighting the other process; so does a
  transactional call that hangs past its timeout (the confluent transport bounds it), so
  a worker never holds its store transaction, and the rows its handlers locked, for good;
- a transaction left open never holds ``read_committed`` readers long (an open transaction
  holds back the last stable offset of every partition it wrote to): a worker that exits
  after a hung call first aborts it (the confluent producer fences itself with a new
  client, within 30 s); a replica that died mid-transaction has it aborted when its
  replacement (same instance id, so same transactional id) starts, or, if none does, by
  the broker after ``transaction.timeout.ms`` (30 s by choreo's default) plus the
  broker's abort check interval (10 s). Through a broker restart the same holds once the
  broker serves again;
- after a broker outage the worker registers its transactional id again as soon as it is
  assigned partitions (not at its next batch, which cannot come while the group's offsets
  are held pending), and commits its last transaction's offsets once more: a restarted
  broker can complete a transaction without writing its markers (Kafka's coordinator
  skips partitions it does not know yet), which would leave the group's offsets pending,
  and the group unable to read those partitions, for good. Only partitions the replica
  owned without a break are re-committed: one that went to another member and came back
  may have advanced there;
- what such a transaction left open on partitions (its outputs, and its group offsets
  when this process does not know them: a replica restarted as a new process) is ended
  by the worker once its id is registered, at start and after an outage: each gets its
  remedy marker (:mod:`choreo.transports.hanging`), a commit on an output partition
  (never losing an output; a copy of an aborted batch's output carries its retry's event
  id, which every inbox drops) and, on the group's offsets, an abort (the coordinator's
  decision no longer shows once this worker registered the id again, which moves its
  epoch; the group reads again from its previous committed offsets and the inbox drops
  what was handled). This needs kafka-python; without it the
  partitions stay unstable until this replica next writes to them, and
  ``choreo transactions hanging --end`` ends them (see docs/operating.md).

Outbox rows an at-least-once run left unsent (this replica's earlier run, or a replica
that died) are published before new work on a store only this process writes: in one
Kafka transaction, then deleted. On a shared store they are the outbox relay's
(:class:`~choreo.store.relay.OutboxRelay`, which the worker runs in this mode too): each
row is claimed by exactly one replica (``FOR UPDATE SKIP LOCKED``), published, and
deleted once acknowledged, so N replicas starting together publish it once, not N times.
Those rows were at-least-once output: a writer that published a row and died before
deleting it leaves a copy in the log (same event id, dropped by every inbox).

What it does not cover: the store transaction commits after the Kafka one, so a crash in
between (the time of one local COMMIT) loses that batch's inbox rows and ``ctx.db``
writes while its outputs and offsets stand. The log stays exactly-once; a handler whose
database writes must match its outputs exactly should put them in its outputs or use
at-least-once delivery with an idempotent handler.
"""

from __future__ import annotations

from choreo.errors import ChoreoError, ConfigurationError, TransactionError, TransportError
from choreo.runtime.config import WorkerConfig
from choreo.runtime.delivery.base import Batch, DeliveryBase, DeliveryLink, Offsets
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import (
    RenewableProducer,
    TopicPartition,
    TransactionalProducer,
    Transport,
    supports_transactions,
)
from choreo.transports.config import KafkaConfig
from choreo.transports.hanging import end_own_hanging

HANGING_TIMEOUT = 10.0
"""Seconds each admin call of the search for this id's hanging transactions may take."""

__all__ = ["Transactional"]


class Transactional(DeliveryBase):
    """Delivers each batch's output and offsets in one Kafka transaction (see module docs)."""

    def __init__(self, transport: Transport, config: WorkerConfig, service: str) -> None:
        self.transport = transport
        self.config = config
        self.service = service
        self.transactional_id = config.transactional_id_for(service)
        self._producer: TransactionalProducer | None = None
        self._settle = False  # partitions were assigned: settle the transactional id at tick
        self._last_offsets: Offsets = {}  # offsets of the last transaction, if it committed
        self._revoked_offsets: Offsets = {}  # of those, revoked by the rebalance under way

    @property
    def producer(self) -> TransactionalProducer:
        """Return the transactional producer (created by :meth:`open`)."""
        if self._producer is None:
            raise RuntimeError("the delivery strategy is not open")
        return self._producer

    def _new_producer(self) -> TransactionalProducer:
        """Return a new producer with this replica's transactional id (fencing older ones)."""
        producer = self.transport.producer(transactional_id=self.transactional_id)
        if not isinstance(producer, TransactionalProducer) or not supports_transactions(producer):
            producer.close()
            raise ConfigurationError(
                f"the {self.transport.name} transport has no transactions: "
                "exactly-once needs a transport whose producers support them"
            )
        return producer

    def open(self, link: DeliveryLink) -> None:
        """Create the producer; publish outbox leftovers of an earlier at-least-once run.

        Only on a store this process alone writes: on a shared store every replica would
        publish every replica's rows; the worker's outbox relay claims them instead.
        """
        super().open(link)
        self._producer = self._new_producer()
        self._end_hanging()
        leftovers = [] if link.inbox.shared else link.inbox.pending(link.origin)
        if leftovers:
            link.log.warning("publishing %d outbox record(s) left over", len(leftovers))
            self._transaction(leftovers, {})
            link.inbox.begin()
            try:
                link.inbox.mark_sent([r[0] for r in leftovers])
            except BaseException:
                link.inbox.rollback()
                raise
            link.inbox.commit()

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Settle the transactional id at the next :meth:`tick` (not inside ``poll``).

        Only the offsets of partitions this replica owned without a break stay candidates
        for the re-commit: those revoked by this rebalance come back only if this same
        assignment holds them (the eager protocol revokes everything, then assigns). A
        partition that went to another member may have advanced there; committing this
        replica's older offset for it again would rewind its group.
        """
        owned = set(partitions)
        self._last_offsets.update(
            {tp: off for tp, off in self._revoked_offsets.items() if tp in owned}
        )
        self._revoked_offsets = {}
        self._settle = True

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Hold back the revoked partitions' last offsets until the assignment that follows."""
        for tp in partitions:
            if tp in self._last_offsets:
                self._revoked_offsets[tp] = self._last_offsets.pop(tp)

    def tick(self) -> None:
        """After an assignment, register the transactional id again if an outage unsettled it."""
        if self._settle:
            self._settle = False
            self._settle_transactional_id()

    def _settle_transactional_id(self) -> None:
        """After an outage: register the id again, then commit the last offsets once more.

        Done when partitions are assigned, before the consumer needs its group's committed
        offsets (which it fetches with ``require_stable``: it waits while any transaction
        holds offsets of the group pending). Two things can hold them after a broker
        restart, and waiting for the next batch would wait for them (the batch cannot
        come before the offsets do):

        - a transaction this id left open: registering the id again (a producer created
          again, or renewed after it lost every broker) aborts it at once instead of
          after ``transaction.timeout.ms``;
        - a transaction the coordinator completed without writing its markers: a broker
          that restarted can load its transaction state before it knows the partitions
          the markers go to, and it then skips them ("Couldn't find leader endpoint ...
          likely deleted already" in its log). The transaction never ends on its own: the
          group's offsets stay pending and its partitions unstable for good. Only the last
          transaction that reached its commit before the outage can be in that state; when
          its commit returned (so the coordinator decided to commit it), committing its
          offsets once more, with a producer of the same id, writes the missing marker to
          the group's offsets partition: the pending offsets become the committed ones they
          were meant to be. After a failed last transaction (its outcome unknown) nothing
          is re-committed.

        A failure is logged and left to the next batch, which creates the producer again;
        a fatal one stops the worker. Once the id is settled, and also when the producer
        rode the outage out without being renewed, the id's hanging transactions are
        searched for and ended (:meth:`_end_hanging`): the search judges a transaction
        hanging only when its coordinator is not ending it, so one of this producer's
        whose markers are still being written is left alone.
        """
        log = self.link.log
        try:
            if self._producer is None:
                self._producer = self._new_producer()
                log.info("transactional producer created again after an assignment")
            elif not (
                isinstance(self._producer, RenewableProducer) and self._producer.renew_if_stale()
            ):
                # the producer rode the outage out: the id stays registered, but a broker
                # that restarted may still have skipped a marker of its last transaction
                self._end_hanging()
                return
            if self._last_offsets:
                log.info(
                    "committing the last transaction's offsets of %d partition(s) again, "
                    "in case the restarted broker left its markers unwritten",
                    len(self._last_offsets),
                )
                self._transaction([], self._last_offsets)
        except TransportError as exc:
            if exc.fatal:
                self._close_producer()
                raise
            log.warning("could not register the transactional id again (next batch will): %s", exc)
            self._close_producer()
            return
        self._end_hanging()

    def _end_hanging(self) -> None:
        """End what a restarted broker left hanging of this id (its skipped markers).

        Called once the id is registered and between two of its transactions (so no
        transaction of it is live): at start, and after every assignment (an outage makes
        one; a producer that rode it out is not registered again, but a restarted broker
        may have skipped a marker of its last transaction all the same). Any transaction
        of this id still open on a partition then has no coordinator to end it (the
        search leaves one its coordinator is still ending), and holds the partition's
        ``read_committed`` readers (or, on ``__consumer_offsets``, the group's offsets)
        for good; each gets its remedy marker (:mod:`choreo.transports.hanging`: the
        coordinator's decision when it still shows, else commit on a data partition and
        abort on the group's offsets, which loses nothing: a batch read again is dropped
        by the inbox). A search that fails is made again (three times in all, a second
        apart: a cluster just restarted answers slowly). Only the worker's own topics
        (:attr:`DeliveryLink.topics`: the only ones its transactions write to) and the
        consumer-offsets topic are searched, not the whole cluster. Needs kafka-python;
        without it, or when every search failed, a warning says what to run.
        """
        config = getattr(self.transport, "config", None)
        if not isinstance(config, KafkaConfig):
            return  # no Kafka broker behind this transport
        log = self.link.log
        try:
            ended = end_own_hanging(
                config,
                self.transactional_id,
                topics=self.link.topics or None,
                timeout=HANGING_TIMEOUT,
            )
        except ConfigurationError as exc:  # kafka-python is not installed
            log.info("not looking for transactions left hanging: %s", exc)
            return
        except ChoreoError as exc:
            # refused permission (fatal) is the cluster's policy: say it without alarm
            (log.info if isinstance(exc, TransportError) and exc.fatal else log.warning)(
                "could not look for transactions of %s left hanging by a broker restart "
                "(if readers stall, run `choreo transactions hanging` as an administrator): %s",
                self.transactional_id,
                exc,
            )
            return
        except Exception as exc:  # a best-effort repair must never stop the worker
            # kafka-python's admin internals differ from the version this was written for
            log.warning(
                "could not look for transactions of %s left hanging by a broker restart "
                "(%s; if readers stall, run `choreo transactions hanging`)",
                self.transactional_id,
                type(exc).__name__,
            )
            log.debug("the search for hanging transactions failed", exc_info=True)
            return
        for hanging in ended:
            log.warning("ended a transaction left hanging: %s", hanging.describe())

    def deliver(self, batch: Batch) -> None:
        """Run the batch's Kafka transaction, then commit the store transaction."""
        try:
            if batch.records or batch.offsets:
                self._transaction(batch.records, batch.offsets)
        except BaseException:
            self.abandon(batch)
            raise
        try:
            self.commit_store()
        except BaseException as exc:
            self.link.log.error(
                "store commit failed after the Kafka transaction committed: this batch's "
                "inbox rows and handler writes are lost, its outputs stand: %s",
                exc,
            )
            raise

    def _transaction(self, records: list[OutboxRecord], offsets: Offsets) -> None:
        """Publish ``records`` and commit ``offsets`` in one transaction; recover on failure.

        A producer whose re-creation failed (the broker still down) is created again first.
        """
        if self._producer is None:
            self._producer = self._new_producer()
        producer = self._producer
        timeout = self.config.transaction_timeout
        try:
            producer.begin_transaction()
            publish = producer.publish
            for _, topic, key, value, headers in records:
                publish(topic, value, key=key, headers=headers)
            if offsets:
                producer.send_offsets_to_transaction(offsets, self.link.consumer, timeout)
            producer.commit_transaction(timeout)
        except TransportError as exc:
            # Its outcome is unknown (the coordinator may have committed it): re-committing
            # older offsets after an outage could commit this one's pending ones too.
            self._last_offsets = {}
            self._revoked_offsets = {}
            self._recover(exc)
            raise
        self._last_offsets = dict(offsets)

    def _recover(self, exc: TransportError) -> None:
        """Abort an abortable transaction, recreate the producer otherwise; never when fenced."""
        log = self.link.log
        if exc.fatal:
            self._close_producer()
            return  # the worker stops on a fatal error (see Worker.run)
        abortable = isinstance(exc, TransactionError) and exc.abortable
        if abortable and not exc.retriable:
            log.warning("transaction failed, aborting it: %s", exc)
            try:
                self.producer.abort_transaction(self.config.transaction_timeout)
                return
            except TransportError as abort_error:
                if abort_error.fatal:
                    self._close_producer()
                    raise
                log.warning("abort failed, recreating the producer: %s", abort_error)
        else:
            log.warning("transaction failed, recreating the producer: %s", exc)
        self._close_producer()
        self._producer = self._new_producer()

    def _close_producer(self) -> None:
        """Close the producer, logging what goes wrong."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close()
            except ChoreoError as close_error:
                self.link.log.debug("closing the failed producer: %s", close_error)

    def close(self) -> None:
        """Close the producer; nothing is pending between batches."""
        if self._producer is not None:
            self._close_producer()
