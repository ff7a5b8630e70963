"""Partition assignors as pure functions: Kafka's ``range`` and ``roundrobin``.

Given the group's members (sorted member ids), which topics each subscribes to and each
topic's partition count, :func:`assign` returns each member's partitions exactly as
Kafka's ``RangeAssignor`` and ``RoundRobinAssignor`` would. The memory transport uses
them for its groups; a transport whose client assigns on its own does not need them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

from choreo.errors import ConfigurationError
from choreo.transports.base import TopicPartition

__all__ = ["ASSIGNORS", "Assignor", "assign"]

Assignor = Literal["range", "roundrobin"]
ASSIGNORS: Final = ("range", "roundrobin")

Plan = dict[str, list[TopicPartition]]


def assign(
    assignor: Assignor,
    members: Sequence[str],
    subscribers: Mapping[str, Sequence[str]],
    partitions: Callable[[str], int],
) -> Plan:
    """Return each member's partitions.

    ``members`` are the member ids, ``subscribers`` maps each topic (in the order to
    assign them, i.e. sorted) to its subscribed member ids in member order, and
    ``partitions(topic)`` is a topic's partition count.
    """
    if assignor == "range":
        return _range(members, subscribers, partitions)
    if assignor == "roundrobin":
        return _round_robin(members, subscribers, partitions)
    raise ConfigurationError(f"unknown assignor {assignor!r}: use 'range' or 'roundrobin'")


def _range(
    members: Sequence[str],
    subscribers: Mapping[str, Sequence[str]],
    partitions: Callable[[str], int],
) -> Plan:
    """Give each subscriber of a topic one contiguous range of its partitions."""
    plan: Plan = {mid: [] for mid in members}
    for name, subscribed in subscribers.items():
        if not subscribed:
            continue
        share, extra = divmod(partitions(name), len(subscribed))
        for index, mid in enumerate(subscribed):
            start = share * index + min(index, extra)
            length = share + (1 if index < extra else 0)
            plan[mid].extend(TopicPartition(name, p) for p in range(start, start + length))
    return plan


def _round_robin(
    members: Sequence[str],
    subscribers: Mapping[str, Sequence[str]],
    partitions: Callable[[str], int],
) -> Plan:
    """Deal every partition of every topic to the members in turn, skipping non-subscribers."""
    plan: Plan = {mid: [] for mid in members}
    cursor = 0
    for name, subscribed in subscribers.items():
        if not subscribed:
            continue
        for p in range(partitions(name)):
            while members[cursor % len(members)] not in subscribed:
                cursor += 1
            plan[members[cursor % len(members)]].append(TopicPartition(name, p))
            cursor += 1
    return plan
