"""Feed a tracker from a transport: a background consumer thread, or a one-shot read.

:class:`LiveTracker` subscribes to topics (a regular expression by default), feeds each
polled batch to the tracker, checks deadlines about once a second and saves the
tracker's checkpoint every few seconds. With a checkpoint it resumes each partition where
the checkpoint stopped. It reads as a consumer group of its own and commits nothing: the
checkpoint, not the group, remembers where it was.

:func:`read_topics` reads what topics hold *now* and stops once the consumer has had its
partitions and nothing new arrived for ``idle_timeout`` seconds (for ``choreo sagas``,
``verify`` and ``export`` against a cluster).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from choreo.errors import ChoreoError
from choreo.tracker.pacing import CATCH_UP_CHECK_S, catching_up
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Consumer, Record, TopicPartition, Transport

__all__ = ["LiveTracker", "read_topics"]

logger = logging.getLogger(__name__)


class LiveTracker:
    """Runs a consumer thread that feeds ``tracker`` from ``transport``.

    ``topics`` (names) take precedence over ``topics_pattern`` (a regular expression
    starting with ``^``); ``from_beginning`` says where partitions without a checkpoint
    start. ``on_batch(records)`` is called after each fed batch (e.g. to refresh a view).
    With ``materialized`` the topics are summary topics that tracker instances write
    (:mod:`choreo.tracker.group`): their records are loaded as summaries
    (:meth:`~choreo.tracker.tracker.Tracker.load_summaries`), not folded as events.
    While it is catching up with its log (:func:`~choreo.tracker.pacing.catching_up`)
    deadlines are checked once a minute instead of every ``deadline_interval``.
    """

    def __init__(
        self,
        tracker: Tracker,
        transport: Transport,
        *,
        topics_pattern: str = "^.*",
        topics: Sequence[str] | None = None,
        from_beginning: bool = True,
        group_id: str | None = None,
        batch_size: int = 1_000,
        poll_timeout: float = 0.5,
        deadline_interval: float = 1.0,
        checkpoint_interval: float = 5.0,
        on_batch: Callable[[list[Record]], None] | None = None,
        materialized: bool = False,
    ) -> None:
        self.tracker = tracker
        self.materialized = materialized
        self.transport = transport
        self.subscription = list(topics) if topics else [topics_pattern]
        self.from_beginning = from_beginning
        self.group_id = group_id or f"choreo-tracker-{uuid.uuid4().hex[:12]}"
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.deadline_interval = deadline_interval
        self.checkpoint_interval = checkpoint_interval
        self.on_batch = on_batch
        self.error: BaseException | None = None
        """The exception that ended the thread, if one did."""
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    @property
    def running(self) -> bool:
        """True while the consumer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LiveTracker:
        """Start the consumer thread (once) and return self."""
        if self._thread is not None:
            raise RuntimeError("this LiveTracker was already started")
        self._thread = threading.Thread(target=self._run, name="choreo-live-tracker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, wait for it (at most ``timeout`` s) and save a final checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_assigned(self, timeout: float = 30.0) -> bool:
        """Block until the consumer has been given partitions; return False on timeout."""
        return self._assigned.wait(timeout)

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Move newly assigned partitions to the checkpoint's offsets (best effort).

        Records below them that are delivered anyway are skipped by the tracker.
        """
        consumer = self._consumer
        offsets = self.tracker.offsets() if consumer is not None else {}
        for tp in partitions:
            offset = offsets.get(tp)
            if offset is None or consumer is None:
                continue
            try:
                consumer.seek(tp, offset)
            except ChoreoError as exc:
                logger.debug("cannot seek %s to %d: %s", tp, offset, exc)
        self._assigned.set()

    def _run(self) -> None:
        tracker = self.tracker
        consumer = self.transport.consumer(self.group_id, from_beginning=self.from_beginning)
        self._consumer = consumer
        next_deadlines = next_checkpoint = last_deadlines = time.monotonic()
        next_checkpoint += self.checkpoint_interval
        try:
            consumer.subscribe(self.subscription, on_assign=self._on_assign)
            load = tracker.load_summaries if self.materialized else tracker.feed_many
            while not self._stop.is_set():
                records = consumer.poll(self.batch_size, self.poll_timeout)
                if records:
                    load(records)
                    if self.on_batch is not None:
                        self.on_batch(records)
                now = time.monotonic()
                behind = catching_up(records, self.batch_size)
                if now >= next_deadlines and (
                    not behind or now >= last_deadlines + CATCH_UP_CHECK_S
                ):
                    tracker.check_deadlines()
                    next_deadlines, last_deadlines = now + self.deadline_interval, now
                if now >= next_checkpoint:
                    tracker.checkpoint()
                    next_checkpoint = now + self.checkpoint_interval
        except BaseException as exc:
            self.error = exc
            logger.exception("the live tracker stopped")
        finally:
            try:
                consumer.close()
            finally:
                tracker.checkpoint()


def read_topics(
    transport: Transport,
    topics: Sequence[str],
    *,
    idle_timeout: float = 2.0,
    assign_timeout: float = 30.0,
    batch_size: int = 1_000,
    group_id: str | None = None,
) -> Iterator[Record]:
    """Yield the records the topics hold now, from the beginning, then stop.

    Stops once partitions were assigned and nothing arrived for ``idle_timeout`` seconds
    (or no partitions came within ``assign_timeout``). Commits nothing.
    """
    if not topics:
        return
    assigned = threading.Event()
    consumer = transport.consumer(
        group_id or f"choreo-read-{uuid.uuid4().hex[:12]}", from_beginning=True
    )
    try:
        consumer.subscribe(list(topics), on_assign=lambda partitions: assigned.set())
        started = last = time.monotonic()
        while True:
            records = consumer.poll(batch_size, min(0.5, idle_timeout))
            now = time.monotonic()
            if records:
                last = now
                yield from records
                continue
            if assigned.is_set() or consumer.assignment():
                assigned.set()
                if now - last >= idle_timeout:
                    return
            else:
                last = now
                if now - started >= assign_timeout:
                    logger.warning("no partitions assigned within %.0f s", assign_timeout)
                    return
    finally:
        consumer.close()
