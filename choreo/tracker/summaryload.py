"""Loading a tracker instance's share of the summary topic when it gets partitions.

A new owner of some partition numbers writes a marker record of its own to each of
their summary partitions (in a transaction), then reads those partitions from the
beginning until it meets its markers: it has then read every summary committed before
(``read_committed`` readers wait behind open transactions, so a dead instance's open one
holds the load until the broker aborts it). Used by :mod:`choreo.tracker.group`.
"""

from __future__ import annotations

import time
import uuid
from typing import Final

from choreo.errors import TransportError
from choreo.tracker.summaries import KIND_HEADER, MARKER, control_key, kind_of
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record, TransactionalProducer, Transport

__all__ = ["read_summary_partitions"]

_MARKER_HEADERS: Final = ((KIND_HEADER, MARKER),)


def read_summary_partitions(
    transport: Transport,
    producer: TransactionalProducer,
    *,
    topic: str,
    group_id: str,
    partitions: int,
    fresh: dict[int, Tracker],
    batch_size: int,
    timeout: float,
) -> int:
    """Load the summary partitions numbered as ``fresh``'s keys into its trackers.

    ``partitions`` is the summary topic's partition count. Returns how many saga
    summaries were loaded; raises :class:`~choreo.errors.TransportError` (retriable)
    when the markers were not all read within ``timeout`` seconds.
    """
    nonce = uuid.uuid4().hex.encode()
    producer.begin_transaction()
    for number in fresh:
        producer.publish(topic, nonce, key=control_key(MARKER, number, partitions),
                         headers=_MARKER_HEADERS)
    producer.commit_transaction()
    loader = transport.consumer(f"{group_id}.load.{uuid.uuid4().hex[:12]}")
    remaining = set(fresh)
    loaded = 0
    paused = False
    deadline = time.monotonic() + timeout
    try:
        loader.subscribe([topic])
        while remaining:
            records = loader.poll(batch_size, 0.5)
            if not paused and loader.assignment():
                others = [tp for tp in loader.assignment() if tp.partition not in fresh]
                if others:
                    loader.pause(others)
                paused = True
            loaded += _apply_loaded(records, fresh, remaining, nonce)
            if time.monotonic() > deadline:
                raise TransportError(
                    f"the summary partitions {sorted(remaining)} were not read within "
                    f"{timeout:.0f} s (an open transaction of a dead instance "
                    "holds them until it times out)", retriable=True,
                )
    finally:
        loader.close(leave_group=True)
    return loaded


def _apply_loaded(
    records: list[Record], fresh: dict[int, Tracker], remaining: set[int], nonce: bytes
) -> int:
    by_number: dict[int, list[Record]] = {}
    for record in records:
        if record.partition not in remaining:
            continue
        if kind_of(record) == MARKER:
            if record.value == nonce:
                remaining.discard(record.partition)
            continue
        by_number.setdefault(record.partition, []).append(record)
    return sum(fresh[number].load_summaries(batch) for number, batch in by_number.items())
