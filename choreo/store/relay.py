"""The outbox relay: publishes outbox rows nobody else will, continuously, in every worker.

The worker publishes its own batch right after the batch's commit (the fast path) and
deletes the rows once the broker acknowledged them. What the fast path never finishes —
rows of a replica that died between its commit and its publish, or of an earlier run of
this process — the relay takes: a daemon thread that every ``interval`` seconds asks the
store for another writer's rows of its origin older than ``min_age`` seconds
(:meth:`~choreo.store.base.Store.relay`; on PostgreSQL claimed with ``FOR UPDATE SKIP
LOCKED``, so the relays of all replicas share the work), publishes them with its own
producer, waits for the broker's acknowledgement (flush) and only then lets the store
delete them. Records of one key (correlation id) go out in the order they were stored.

The worker runs one on a shared store in both delivery modes (in exactly-once mode no new
rows are written, but an at-least-once run may have left some), with the settings of
``WorkerConfig.relay_interval``, ``relay_min_age`` and ``relay_batch`` (``choreo run
--relay-*``, ``$CHOREO_RELAY_*``). On a store only one process writes, the delivery
strategy replays the leftovers at start instead.

Guarantee: every committed outbox row is published at least once while any replica of
its service runs; a row is deleted only after the broker acknowledged it; a row is never
published before its transaction committed (the relay reads committed rows only).
Duplicates (a row published by a dying replica and again by the relay) keep their event
id, so the consumers' inboxes drop them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from choreo.errors import ChoreoError
from choreo.store.base import Store
from choreo.store.outbox import OutboxRecord
from choreo.store.pg_errors import first_line
from choreo.transports.base import Producer, Transport

__all__ = ["OutboxRelay"]

logger = logging.getLogger(__name__)


class OutboxRelay:
    """A thread that publishes ``origin``'s outbox rows left by other writers of ``store``.

    ``min_age`` (seconds) is how old another writer's row must be before it is taken: on
    a shared store the writer may be a live replica about to publish it itself; on a store
    that cannot be shared every other writer is dead, so it is 0 there by default.
    """

    def __init__(
        self,
        store: Store,
        transport: Transport,
        origin: str,
        *,
        interval: float = 1.0,
        min_age: float | None = None,
        limit: int = 500,
        flush_timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.origin = origin
        self.interval = interval
        self.min_age = (5.0 if store.shared else 0.0) if min_age is None else min_age
        self.limit = limit
        self.flush_timeout = flush_timeout
        self.published = 0
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"OutboxRelay({self.origin!r}, store={self.store!r})"

    def start(self) -> None:
        """Start the relay thread (a daemon; calling start twice does nothing)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._loop, name=f"choreo-relay-{self.origin}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current round and close its producer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._producer is not None:
            try:
                self._producer.close()
            except ChoreoError as exc:
                logger.debug("closing the relay's producer: %s", exc)
            self._producer = None

    def run_once(self) -> int:
        """Relay until nothing is left for now; return how many records were published."""
        total = 0
        while not self._stop.is_set():
            count = self.store.relay(
                self.origin,
                min_age_ms=int(self.min_age * 1000),
                limit=self.limit,
                publish=self._publish,
            )
            total += count
            if count < self.limit:
                break
        if total:
            self.published += total
            logger.warning(
                "relayed %d outbox record(s) of %s left by another writer", total, self.origin
            )
        return total

    def _publish(self, records: Sequence[OutboxRecord]) -> None:
        """Publish ``records`` in order and return once the broker acknowledged all of them."""
        if self._producer is None:
            self._producer = self.transport.producer()
        producer = self._producer
        for _, topic, key, value, headers in records:
            producer.publish(topic, value, key=key, headers=headers)
        producer.flush(self.flush_timeout)

    def _loop(self) -> None:
        """Relay every ``interval`` seconds until stopped; errors are logged and retried."""
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:
                logger.warning(
                    "outbox relay of %s failed (%s): retrying in %.1f s",
                    self.origin,
                    first_line(exc),
                    self.interval,
                )
                logger.debug("the relay failure's traceback", exc_info=exc)
            self._stop.wait(self.interval)
