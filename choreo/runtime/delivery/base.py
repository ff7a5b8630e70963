"""The :class:`Delivery` interface: how a batch's output reaches Kafka and its offsets commit.

The worker handles a polled batch inside one transaction of its store (an
:class:`~choreo.store.base.Store`); a delivery strategy decides what happens to the
batch's output and offsets around that transaction's commit:

- :class:`~choreo.runtime.delivery.at_least_once.AtLeastOnce`: store the output in the
  outbox, commit the store, publish, flush, commit the offsets;
- :class:`~choreo.runtime.delivery.transactional.Transactional`: outputs and offsets in
  one Kafka transaction.

A strategy is given a :class:`DeliveryLink` when the worker starts (the worker's consumer,
store and rewind function) and is then driven by the loop: :meth:`Delivery.tick` before
every poll (and :meth:`Delivery.idle` after an empty one), :meth:`Delivery.stage` right
after the batch's store transaction begins, :meth:`Delivery.deliver` with the handled
batch, :meth:`Delivery.revoke` when partitions are taken away, and :meth:`Delivery.close`
when the worker stops. A strategy may leave a batch's store commit unconfirmed when
:meth:`Delivery.deliver` returns (:attr:`DeliveryBase.behind`); the worker then calls
:meth:`DeliveryBase.settle` once the next batch was handled (or before a poll that may
wait, a revocation, the close) and runs the after-commit hooks with the offsets it
returns; :meth:`Delivery.revoke` and :meth:`Delivery.close` find nothing behind.
:class:`DeliveryBase` implements the methods a strategy may not need. The store's outbox
relay plugs in as another strategy: one that commits the store
transaction with the output in the outbox and commits the offsets, leaving publication to
the relay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from choreo.model.context import EventLogger
from choreo.store import Inbox
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Consumer, TopicPartition

__all__ = ["Batch", "Delivery", "DeliveryBase", "DeliveryLink", "Offsets"]

Offsets = dict[TopicPartition, int]
"""The next offset to read of each partition (Kafka's committed-offset convention)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A handled batch: what it emitted and where each of its partitions goes next.

    ``records`` are the outbox records to publish (emitted events and dead letters);
    ``offsets`` the offsets to commit for the records handled; ``first`` the first offset
    polled of each partition (where to rewind if the batch must be handled again).
    """

    records: list[OutboxRecord]
    offsets: Offsets
    first: Offsets


@dataclass(frozen=True, slots=True)
class DeliveryLink:
    """What a delivery strategy uses of its worker once it started.

    ``origin`` names the worker's rows in the store's outbox; ``rewind(first)`` seeks the
    consumer back so a batch is polled again; ``log`` stamps lines with the service;
    ``topics`` are every topic the worker reads or may write (its inputs, the topics of
    the events its handlers declare, its dead-letter topic).
    """

    consumer: Consumer
    inbox: Inbox
    origin: str
    rewind: Callable[[Offsets], None]
    log: EventLogger
    topics: tuple[str, ...] = ()


@runtime_checkable
class Delivery(Protocol):
    """Gets each batch's output to Kafka and commits its offsets, with a stated guarantee.

    The worker calls :meth:`open` once, then per poll :meth:`tick`, per assignment
    :meth:`assign` and per revocation :meth:`revoke`, and per batch
    :meth:`stage` (store transaction open) and :meth:`deliver` (store transaction still
    open: the strategy commits it, or rolls it back and raises).
    """

    def open(self, link: DeliveryLink) -> None:
        """Bind to the started worker and deliver what a previous run left behind."""
        ...

    def tick(self) -> None:
        """Retry what an earlier batch left undelivered (called before every poll)."""
        ...

    def idle(self) -> None:
        """Tidy up after a poll that returned nothing."""
        ...

    def stage(self) -> None:
        """Write the strategy's bookkeeping into the batch's open store transaction."""
        ...

    def deliver(self, batch: Batch) -> None:
        """Commit the open store transaction with ``batch``'s output and commit its offsets.

        On failure the store transaction is rolled back (if it was not committed), the
        consumer is rewound where the batch must be read again, and the error is raised.
        """
        ...

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Note that ``partitions`` were assigned (runs inside ``poll``: defer slow work)."""
        ...

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Settle what ``partitions`` have pending before they go to another member."""
        ...

    def close(self) -> None:
        """Deliver what is pending (best effort) and release the strategy's clients."""
        ...

    @property
    def behind(self) -> bool:
        """True while a delivered batch's store commit is unconfirmed (see :meth:`settle`)."""
        ...

    def settle(self) -> Offsets | None:
        """Finish the batch whose store commit was sent behind; return its offsets (or None)."""
        ...


class DeliveryBase:
    """Shared parts of a strategy: the link, and nothing to do on tick, idle, stage or revoke."""

    _link: DeliveryLink | None = None

    @property
    def link(self) -> DeliveryLink:
        """Return the worker link given to :meth:`open` (raises before it)."""
        if self._link is None:
            raise RuntimeError("the delivery strategy is not open")
        return self._link

    def open(self, link: DeliveryLink) -> None:
        """Bind to the started worker."""
        self._link = link

    def tick(self) -> None:
        """Do nothing: nothing is left over between batches."""

    def idle(self) -> None:
        """Do nothing: nothing to tidy up."""

    def stage(self) -> None:
        """Do nothing: no bookkeeping in the store transaction."""

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Do nothing: an assignment needs no preparation."""

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Do nothing: no batch is in flight while partitions are revoked."""

    @property
    def behind(self) -> bool:
        """True while a delivered batch's store commit is unconfirmed (see :meth:`settle`)."""
        return False

    def settle(self) -> Offsets | None:
        """Finish the batch whose store commit was sent behind; return its offsets.

        None when no batch waits. Raises (after arranging its rewind) when that commit
        failed. This base delivers every batch at once: nothing waits.
        """
        return None

    def commit_store(self) -> None:
        """Commit the open store transaction."""
        self.link.inbox.commit()

    def abandon(self, batch: Batch) -> None:
        """Roll the open store transaction back and rewind to the batch's first offsets."""
        link = self.link
        link.inbox.rollback()
        link.rewind(batch.first)
