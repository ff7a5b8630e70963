"""What a stalled scenario's groups are waiting for: the facts the report needs to say why.

When no saga ended for a while, :func:`stall_facts` asks the broker, for every service's
group, which members hold which partitions, and for every partition whose committed
offset is behind: the committed offset, the last stable offset (what a read_committed
consumer may read up to) and the high watermark. A last stable offset below the high
watermark means an open transaction blocks every read_committed reader of that
partition; a committed offset below a last stable offset with an owner that handles
nothing means a stuck consumer.
"""

from __future__ import annotations

from typing import Any

_TIMEOUT = 10.0


def stall_facts(bootstrap: str, groups: list[str]) -> dict[str, Any]:
    """Return, per group, its state, members and the partitions it is behind on."""
    from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": bootstrap})
    facts: dict[str, Any] = {}
    described = admin.describe_consumer_groups(groups, request_timeout=_TIMEOUT)
    for group in groups:
        entry: dict[str, Any] = {}
        try:
            description = described[group].result(timeout=_TIMEOUT)
            entry["state"] = str(description.state)
            entry["members"] = {
                str(m.group_instance_id or m.member_id): len(m.assignment.topic_partitions)
                for m in description.members
            }
            listed = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=_TIMEOUT
            )[group].result(timeout=_TIMEOUT)
            committed = {
                (tp.topic, tp.partition): tp.offset for tp in listed.topic_partitions or []
            }
            entry["behind"] = _behind(admin, committed, TopicPartition, OffsetSpec, IsolationLevel)
        except Exception as error:  # a diagnosis never fails the run
            entry["error"] = str(error)[:300]
        facts[group] = entry
    return facts


def _behind(
    admin: Any, committed: dict[tuple[str, int], int], tp_type: Any, spec: Any, isolation: Any
) -> list[str]:
    """Return 'topic[p] committed/LSO/HW' for partitions not fully consumed or not stable."""
    if not committed:
        return []
    keys = list(committed)
    stable = admin.list_offsets(
        {tp_type(t, p): spec.latest() for t, p in keys},
        isolation_level=isolation.READ_COMMITTED,
        request_timeout=_TIMEOUT,
    )
    high = admin.list_offsets(
        {tp_type(t, p): spec.latest() for t, p in keys},
        isolation_level=isolation.READ_UNCOMMITTED,
        request_timeout=_TIMEOUT,
    )
    highs = {(t.topic, t.partition): f.result(timeout=_TIMEOUT).offset for t, f in high.items()}
    found = []
    for tp, future in stable.items():
        key = (tp.topic, tp.partition)
        lso, hw, done = future.result(timeout=_TIMEOUT).offset, highs[key], committed[key]
        if done < lso or lso < hw:
            found.append(f"{key[0].rsplit('.', 1)[-1]}[{key[1]}] {done}/{lso}/{hw}")
    return found
