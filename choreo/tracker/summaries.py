"""The records tracker instances materialize to the summary topic, and reading them back.

The summary topic is a compacted Kafka topic with as many partitions as the event topics.
It holds three kinds of records, told apart by the :data:`KIND_HEADER` header:

- ``saga``: key = the correlation id (UTF-8), so the record lands in the partition the
  saga's events are in and compaction keeps the latest one; value = a fixed head
  (version, state, status, flags, first/last times, deadline, event count), the saga
  name, and the saga's events packed standalone (:func:`~choreo.tracker.compact.pack_standalone`),
  so the next owner of the partition can fold new events into it;
- ``stats``: one per partition, the tracker counters of that partition (JSON);
- ``marker``: one per partition, written by an instance that loads the partition, so it
  knows when it has read everything before it.

The ``stats`` and ``marker`` keys are not valid UTF-8 (:func:`control_key`), so no
correlation id (the tracker only accepts UTF-8 ones) can share them in compaction.

The topic is data like any other: anyone with write access can put anything there.
:func:`decode_saga` and :func:`decode_stats` bound every length, count and number they
read and raise :class:`SummaryError` for anything else; the events blob is checked when
it is unpacked (:func:`~choreo.tracker.compact.unpack_events`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Final

from choreo.tracker.accounting import MAX_HEADER_BYTES
from choreo.tracker.compact import pack_standalone
from choreo.tracker.entries import SAVED_FLAGS, STATE_INDEX, STATES, STATUS_INDEX, STATUSES, Summary
from choreo.tracker.model import TraceEvent
from choreo.transports.base import Record
from choreo.transports.partitioner import partition_for

__all__ = [
    "DEFAULT_SUMMARY_TOPIC",
    "KIND_HEADER",
    "MAX_STATS_ENTRIES",
    "MAX_SUMMARY_BYTES",
    "SummaryError",
    "control_key",
    "decode_saga",
    "decode_stats",
    "encode_saga",
    "encode_stats",
    "kind_of",
]

DEFAULT_SUMMARY_TOPIC: Final = "_choreo-saga-summaries"
"""The summary topic's default name (a leading ``_`` keeps it out of ``^[^_].*``)."""
KIND_HEADER: Final = "choreo-tracker-record"
"""The header naming a summary record's kind: ``saga``, ``stats`` or ``marker``."""
MAX_SUMMARY_BYTES: Final = 4 * 1024 * 1024
"""The largest saga summary read; a larger one is refused."""
MAX_EVENT_COUNT: Final = 10_000_000
"""The largest event count a summary may claim."""
MAX_STATS_ENTRIES: Final = 256
"""The most counters a stats record may carry."""
_MAX_STATS_BYTES: Final = 64 * 1024
_MAX_COUNTER: Final = 2**53
_VERSION: Final = 1
# version, state, status, flags, started, ended, deadline, event count, saga name length
_HEAD: Final = struct.Struct("<BBBBqqqIH")
_HAS_STARTED: Final = 0x10
_HAS_ENDED: Final = 0x20
_HAS_DEADLINE: Final = 0x40
SAGA: Final = b"saga"
STATS: Final = b"stats"
MARKER: Final = b"marker"
_KINDS: Final = frozenset((SAGA, STATS, MARKER))


class SummaryError(ValueError):
    """A summary record this version did not write (or a hostile one); the message says why."""


def kind_of(record: Record) -> bytes | None:
    """Return a summary record's kind (``saga``, ``stats``, ``marker``), or None for another."""
    found = None
    for name, value in record.headers:
        if name == KIND_HEADER:
            if found is not None:
                return None  # a repeated kind header: trust neither
            found = value
    return found if found in _KINDS else None


def control_key(kind: bytes, partition: int, partitions: int) -> bytes:
    """Return the key of ``kind``'s control record (stats, marker) for ``partition``.

    The key starts with ``0xFF`` (never valid UTF-8) and is chosen so that Kafka's
    default partitioner puts it in ``partition`` of a topic of ``partitions``.
    """
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is not one of {partitions}")
    return _control_keys(kind, partitions)[partition]


_KEYS: dict[tuple[bytes, int], list[bytes]] = {}


def _control_keys(kind: bytes, partitions: int) -> list[bytes]:
    """Return one control key per partition for ``kind`` (found once, then cached)."""
    known = _KEYS.get((kind, partitions))
    if known is not None:
        return known
    keys: list[bytes | None] = [None] * partitions
    missing = partitions
    number = 0
    while missing:
        key = b"\xff" + kind + b":" + str(number).encode()
        slot = partition_for(key, partitions)
        if keys[slot] is None:
            keys[slot] = key
            missing -= 1
        number += 1
    found = [key for key in keys if key is not None]
    _KEYS[(kind, partitions)] = found
    return found


def encode_saga(
    correlation_id: str, summary: Summary, events: Sequence[TraceEvent]
) -> tuple[bytes, bytes]:
    """Return the key and value of a saga's summary record.

    Raises :class:`struct.error` or :class:`ValueError` when a number or text does not
    fit the record (the tracker keeps such a saga, but cannot materialize it).
    """
    saga, state, status, flags, started, ended, deadline, count = summary
    name = saga.encode("utf-8")
    head = _HEAD.pack(
        _VERSION,
        STATE_INDEX[state],
        STATUS_INDEX[status],
        (flags & SAVED_FLAGS)
        | (0 if started is None else _HAS_STARTED)
        | (0 if ended is None else _HAS_ENDED)
        | (0 if deadline is None else _HAS_DEADLINE),
        started or 0,
        ended or 0,
        deadline or 0,
        count,
        len(name),
    )
    return correlation_id.encode("utf-8"), head + name + pack_standalone(events)


def decode_saga(key: bytes | None, value: bytes | None) -> tuple[str, Summary, bytes]:
    """Return a saga record's correlation id, summary and standalone events blob.

    Raises :class:`SummaryError` when the key or value is missing, too long, not UTF-8,
    of another version, or names a state or status that does not exist.
    """
    if not key or len(key) > MAX_HEADER_BYTES:
        raise SummaryError("a saga summary without a key, or with one too long")
    if value is None or len(value) > MAX_SUMMARY_BYTES or len(value) < _HEAD.size:
        raise SummaryError("a saga summary that is missing, cut short or too long")
    try:
        cid = key.decode("utf-8")
    except UnicodeDecodeError:
        raise SummaryError("a saga summary whose key is not UTF-8") from None
    version, state, status, flags, started, ended, deadline, count, length = _HEAD.unpack_from(
        value
    )
    if version != _VERSION:
        raise SummaryError(f"a saga summary of version {version} (this one reads {_VERSION})")
    if state >= len(STATES) or status >= len(STATUSES) or count > MAX_EVENT_COUNT:
        raise SummaryError("a saga summary with an unknown state or status, or too many events")
    end = _HEAD.size + length
    if length > MAX_HEADER_BYTES or end > len(value):
        raise SummaryError("a saga summary whose saga name is too long or cut short")
    try:
        saga = value[_HEAD.size : end].decode("utf-8")
    except UnicodeDecodeError:
        raise SummaryError("a saga summary whose saga name is not UTF-8") from None
    summary = Summary(
        saga,
        STATES[state],
        STATUSES[status],
        flags & SAVED_FLAGS,
        started if flags & _HAS_STARTED else None,
        ended if flags & _HAS_ENDED else None,
        deadline if flags & _HAS_DEADLINE else None,
        count,
    )
    return cid, summary, value[end:]


def encode_stats(counters: Mapping[str, int]) -> bytes:
    """Return the value of a partition's stats record (the tracker's counters as JSON)."""
    return json.dumps(dict(counters), sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_stats(value: bytes | None) -> dict[str, int]:
    """Return the counters of a stats record; raise :class:`SummaryError` for a hostile one.

    At most :data:`MAX_STATS_ENTRIES` counters, names of at most 200 characters, values
    whole numbers from 0 to 2**53.
    """
    if value is None or len(value) > _MAX_STATS_BYTES:
        raise SummaryError("a stats record that is missing or too long")
    try:
        data = json.loads(value)
    except ValueError:
        raise SummaryError("a stats record that is not JSON") from None
    if not isinstance(data, dict) or len(data) > MAX_STATS_ENTRIES:
        raise SummaryError("a stats record that is not an object of a bounded size")
    counters: dict[str, int] = {}
    for name, number in data.items():
        if (
            not isinstance(name, str)
            or len(name) > 200
            or type(number) is not int
            or not 0 <= number <= _MAX_COUNTER
        ):
            raise SummaryError("a stats record with a counter that is not a bounded number")
        counters[name] = number
    return counters
