"""Waiting without leaving the group: paused partitions for deferred retries and backoffs.

A consumer that stops polling for longer than ``max.poll.interval.ms`` is thrown out of
its group, which then rebalances. The worker therefore never sleeps long: it pauses
partitions and keeps polling. :class:`Pauses` keeps the partitions paused for deferred
handler retries with the time each may resume (:meth:`Pauses.defer`,
:meth:`Pauses.resume_due`), and :meth:`Pauses.back_off` waits out an infrastructure
error's backoff polling with every partition paused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Final

from choreo.errors import TransportError
from choreo.model.context import EventLogger
from choreo.transports.base import Consumer, Record, TopicPartition

__all__ = ["Pauses", "first_offsets", "next_offsets", "sole_partition"]

Offsets = dict[TopicPartition, int]


_TOPIC: Final = attrgetter("topic")
_PARTITION: Final = attrgetter("partition")


def sole_partition(records: Sequence[Record]) -> tuple[str, int] | None:
    """Return the (topic, partition) of ``records`` when there is exactly one, else None.

    C-level passes (the common batch is one partition): the partitions, then the topics,
    each counted against the first record's, with no tuple per record.
    """
    if not records:
        return None
    topic, partition = records[0].topic, records[0].partition
    count = len(records)
    if list(map(_PARTITION, records)).count(partition) != count:
        return None
    if list(map(_TOPIC, records)).count(topic) != count:
        return None
    return topic, partition


def first_offsets(records: list[Record]) -> Offsets:
    """Return the first offset of each partition in ``records``."""
    sole = sole_partition(records)
    if sole is not None:
        return {TopicPartition(*sole): records[0].offset}
    first: dict[tuple[str, int], int] = {}
    for record in records:
        first.setdefault((record.topic, record.partition), record.offset)
    return {TopicPartition(*tp): offset for tp, offset in first.items()}


def next_offsets(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """Return the offset after the last record of each (topic, partition) in ``records``."""
    sole = sole_partition(records)
    if sole is not None:
        return {sole: records[-1].offset + 1}
    return {(r.topic, r.partition): r.offset + 1 for r in records}


class Pauses:
    """The partitions a worker paused, with the monotonic time each may resume."""

    def __init__(self, log: EventLogger) -> None:
        self.until: dict[TopicPartition, float] = {}
        self._log = log

    def __bool__(self) -> bool:
        return bool(self.until)

    def defer(self, consumer: Consumer, deferred: Mapping[tuple[str, int], float]) -> None:
        """Pause the ``deferred`` partitions until their resume times."""
        if not deferred:
            return
        partitions = [TopicPartition(*where) for where in deferred]
        consumer.pause(partitions)
        for tp, resume_at in zip(partitions, deferred.values(), strict=True):
            self.until[tp] = max(self.until.get(tp, 0.0), resume_at)

    def resume_due(self, consumer: Consumer, timeout: float) -> float:
        """Resume the partitions whose time has come; return the poll timeout to use.

        The timeout is shortened so the next poll returns by the earliest resume time.
        """
        now = time.monotonic()
        due = [tp for tp, at in self.until.items() if at <= now]
        if due:
            for tp in due:
                del self.until[tp]
            try:
                consumer.resume(due)
            except Exception as exc:  # revoked meanwhile: its new owner reads it
                self._log.debug("cannot resume %s: %s", due, exc)
        if self.until:
            timeout = min(timeout, max(0.0, min(self.until.values()) - now))
        return timeout

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Forget the pauses of revoked ``partitions`` (a rebalance resets them)."""
        for tp in partitions:
            self.until.pop(tp, None)

    def back_off(
        self,
        consumer: Consumer,
        seconds: float,
        *,
        stop: threading.Event,
        max_records: int,
        poll_timeout: float,
        rewind: Callable[[Offsets], None],
    ) -> None:
        """Wait ``seconds`` (or until ``stop``) polling with every partition paused; resume.

        Records of partitions assigned meanwhile are given back (``rewind``) and paused
        too; partitions paused for deferred retries stay paused afterwards. A fatal
        consumer error (e.g. a static member fenced) is raised: the client reports it
        once, and a worker that waited it out would stay alive owning nothing.
        """
        deadline = time.monotonic() + seconds
        try:
            consumer.pause(consumer.assignment())
        except Exception as exc:  # the consumer itself is in trouble: just wait
            self._log.debug("cannot pause for the backoff: %s", exc)
            stop.wait(seconds)
            return
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                records = consumer.poll(max_records, min(left, max(poll_timeout, 0.1)))
            except Exception as exc:
                if isinstance(exc, TransportError) and exc.fatal:
                    raise
                self._log.debug("poll during the backoff failed: %s", exc)
                stop.wait(min(left, 1.0))
                continue
            if records:  # partitions assigned meanwhile: give their records back for later
                first = first_offsets(records)
                rewind(first)
                consumer.pause(list(first))
        try:
            consumer.resume([tp for tp in consumer.assignment() if tp not in self.until])
        except Exception as exc:
            self._log.debug("cannot resume after the backoff: %s", exc)
