"""What handling (part of) a polled batch produced, and the offsets it moves its partitions to."""

from __future__ import annotations

from dataclasses import dataclass, field

from choreo.runtime.pauses import next_offsets
from choreo.store.outbox import OutboxRecord
from choreo.transports.base import Record

__all__ = ["BatchOutput", "handled_up_to"]


@dataclass(slots=True)
class BatchOutput:
    """What handling part of a batch produced: outbox records, handled ids, next offsets.

    ``abandoned`` is True when the worker stopped during a retry's backoff: the records
    from the abandoned one on were not handled and their offsets are not in
    ``next_offsets``.
    """

    records: list[OutboxRecord] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    abandoned: bool = False


def handled_up_to(
    records: list[Record], done: int, offsets: dict[tuple[str, int], int], *, one: bool
) -> None:
    """Put the next offset of each partition of the first ``done`` records in ``offsets``.

    ``one``: every record is of one partition, so its next offset is the last one's + 1.
    """
    if not one:
        offsets.update(next_offsets(records[:done] if done < len(records) else records))
    elif done:
        last = records[done - 1]
        offsets[last.topic, last.partition] = last.offset + 1
