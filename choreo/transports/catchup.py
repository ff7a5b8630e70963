"""Read topics up to where they ended when the read began, however long their fetches stall.

:func:`read_to_ends` reads ``topics`` from the beginning with a consumer of its own
(a fresh group; it commits nothing). When the consumer gets its partitions, the end of
each one is asked of the broker right away (the offset the next record will get; with
``read_committed``, as choreo's consumers read, the last stable offset where the
client tells it: records of a transaction still open are not readable yet, and those
after it are left to later readers). The read stops once the consumer's position in
every partition has reached that end, so a fetch that stalls for seconds (a broker busy
with a rebalance, a slow disk, a paused client) only makes the read take longer; nothing
is cut short. Control records (transaction markers) that end a partition are passed by
the position, not by a record, which is why positions are asked for when a poll comes
back empty.

``select`` (given the assigned partitions, returns those to read) limits the read to some
partitions: the others are paused at assignment and never wait for their end.

Bounds: ``max_seconds`` for the whole read (past it the read stops and the ``report``
says so and which partitions were not caught up: the caller warns in its own words),
``assign_timeout`` for the assignment (a WARNING). The ends of all wanted partitions are
asked in one call of the consumer, bounded by 5 s or what is left of ``max_seconds``,
whichever is less (the transports ask all partitions together, not one after the other).
A partition whose end the broker does not tell in time (a freshly created partition whose
leader does not answer yet, a broker restarting) is asked again every half second. A
consumer that cannot tell ends at all (a transport that offers neither ``high_watermarks``
nor ``positions``) is read until nothing arrived for ``idle_timeout``
seconds, as before.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from choreo.transports.base import Consumer, Record, TopicPartition, Transport

__all__ = ["CatchUp", "Select", "read_to_ends"]

logger = logging.getLogger(__name__)

_POLL_S: Final = 0.5
_ENDS_TIMEOUT_S: Final = 5.0
"""The most one ask for the ends may take (less when the read's own bound is nearer)."""
_MIN_ENDS_TIMEOUT_S: Final = 0.1

Ends = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, int]]


class EndsOf(Protocol):
    """A consumer's ``high_watermarks``: the ends of ``partitions``, within ``timeout`` s."""

    def __call__(
        self, partitions: Sequence[TopicPartition], timeout: float = ...
    ) -> Mapping[TopicPartition, int]:
        """Return the ends the broker told within ``timeout`` seconds (others left out)."""
        ...
Select = Callable[[Sequence[TopicPartition]], Collection[TopicPartition]]
"""Given the assigned partitions, returns the ones to read."""


@dataclass
class CatchUp:
    """What a :func:`read_to_ends` read did (filled in as it goes; final once it stopped)."""

    ends: dict[TopicPartition, int] = field(default_factory=dict)
    """The end of each wanted partition, captured at assignment (next offset to be written)."""
    skipped: set[TopicPartition] = field(default_factory=set)
    """Assigned partitions left unread because ``select`` left them out."""
    behind: set[TopicPartition] = field(default_factory=set)
    """Wanted partitions not caught up when the read stopped (empty when it completed)."""
    timed_out: bool = False
    """True when ``max_seconds`` (or ``assign_timeout``) stopped the read."""
    seconds: float = 0.0
    """How long the read took."""
    by_idle: bool = False
    """True when the consumer could not tell ends and the read stopped on idleness."""
    assigned: bool = False
    """True once the read's consumer got its partitions (False: it read nothing)."""


def read_to_ends(
    transport: Transport,
    topics: Sequence[str],
    *,
    select: Select | None = None,
    max_seconds: float = 300.0,
    assign_timeout: float = 30.0,
    idle_timeout: float = 1.0,
    batch_size: int = 1_000,
    report: CatchUp | None = None,
) -> Iterator[Record]:
    """Yield the records ``topics`` hold up to their ends at assignment, then stop.

    See the module documentation for the stopping rule and the bounds; ``report`` (when
    given) is filled in with the ends, the skipped partitions and whether the read
    completed. ``select`` picks the partitions to read among the assigned ones.
    """
    state = report if report is not None else CatchUp()
    if not topics:
        return
    consumer = transport.consumer(f"choreo-catchup-{uuid.uuid4().hex[:12]}", from_beginning=True)
    try:
        consumer.subscribe(list(topics))
        started = time.monotonic()
        try:
            yield from _read(consumer, state, select, max_seconds, assign_timeout,
                             idle_timeout, batch_size)
        finally:
            state.seconds = time.monotonic() - started
    finally:
        consumer.close()


def _read(  # noqa: PLR0917 - the loop's state, passed once
    consumer: Consumer,
    state: CatchUp,
    select: Select | None,
    max_seconds: float,
    assign_timeout: float,
    idle_timeout: float,
    batch_size: int,
) -> Iterator[Record]:
    ends_of: EndsOf | None = getattr(consumer, "high_watermarks", None)
    positions_of: Ends | None = getattr(consumer, "positions", None)
    exact = ends_of is not None and positions_of is not None
    started = last = time.monotonic()
    reading: set[TopicPartition] | None = None  # the wanted assigned partitions, once known
    unknown: set[TopicPartition] = set()  # wanted partitions whose end is not known yet
    seen: dict[TopicPartition, int] = {}  # the next offset after the last record yielded
    next_ask = started  # when to ask again for the ends not known yet
    while True:
        records = consumer.poll(batch_size, _POLL_S)
        now = time.monotonic()
        if reading is None:
            assigned = consumer.assignment()
            if assigned:
                state.assigned = True
                reading = _start(consumer, assigned, select, state)
                unknown = set(reading)
            elif now - started >= assign_timeout:
                logger.warning("no partitions assigned within %.0f s", assign_timeout)
                state.timed_out = True
                return
        if records:
            last = now
            yield from _up_to_ends(consumer, records, reading, state.ends, seen)
        if reading is not None and exact:
            assert ends_of is not None
            if unknown and now >= next_ask:  # at assignment, then again for the missing
                bound = min(_ENDS_TIMEOUT_S, max_seconds - (now - started))
                found = _ends(ends_of, sorted(unknown), max(bound, _MIN_ENDS_TIMEOUT_S))
                state.ends.update(found)
                unknown.difference_update(found)
                next_ask = time.monotonic() + _POLL_S
            if not unknown and not _behind(state.ends, seen, None if records else positions_of):
                return
        elif reading is not None and not records and now - last >= idle_timeout:
            state.by_idle = True
            return
        if now - started > max_seconds:
            state.timed_out = True
            if reading is not None and exact:
                state.behind = _behind(state.ends, seen, positions_of) | unknown
            return


def _up_to_ends(
    consumer: Consumer,
    records: list[Record],
    reading: set[TopicPartition] | None,
    ends: Mapping[TopicPartition, int],
    seen: dict[TopicPartition, int],
) -> Iterator[Record]:
    """Yield the records below their partition's end; pause the partitions that reached it.

    A partition written to after its end was captured would otherwise keep the read going.
    """
    reached: set[TopicPartition] = set()
    for record in records:
        tp = record.topic_partition
        if reading is not None and tp not in reading:
            continue  # an unwanted partition fetched before its pause took effect
        end = ends.get(tp)
        if end is not None and record.offset >= end:
            reached.add(tp)
            continue
        seen[tp] = record.offset + 1
        yield record
        if end is not None and record.offset + 1 >= end:
            reached.add(tp)
    if reached:
        consumer.pause(sorted(reached))


def _start(
    consumer: Consumer,
    assigned: list[TopicPartition],
    select: Select | None,
    state: CatchUp,
) -> set[TopicPartition]:
    """Pause the partitions ``select`` leaves out; return the ones to read."""
    keep = set(assigned) if select is None else set(select(assigned)) & set(assigned)
    state.skipped = set(assigned) - keep
    if state.skipped:
        consumer.pause(sorted(state.skipped))
    return keep


def _ends(
    ends_of: EndsOf, partitions: list[TopicPartition], timeout: float
) -> dict[TopicPartition, int]:
    """Return the ends the consumer could tell for ``partitions`` within ``timeout`` seconds
    (the rest are left out: asked again later)."""
    try:
        found = ends_of(partitions, timeout=timeout)
    except Exception as exc:  # a transport's own method: any error means "not known yet"
        logger.debug("no end offsets yet: %s", exc)
        return {}
    return {tp: end for tp, end in found.items() if tp in set(partitions) and end >= 0}


def _behind(
    ends: Mapping[TopicPartition, int],
    seen: Mapping[TopicPartition, int],
    positions_of: Ends | None,
) -> set[TopicPartition]:
    """Return the partitions whose records up to their end were not all read yet."""
    short = {tp for tp, end in ends.items() if seen.get(tp, 0) < end}
    if not short or positions_of is None:
        return short
    try:
        positions = positions_of(sorted(short))
    except Exception as exc:  # a transport's own method: any error means "not there yet"
        logger.debug("no positions: %s", exc)
        return short
    return {tp for tp in short if positions.get(tp, -1) < ends[tp]}
