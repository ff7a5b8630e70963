"""What a stalled scenario's groups are waiting for: the facts the report needs to say why.

When no saga ended for a while, :func:`stall_facts` asks the broker, for every service's
group, which members hold which partitions, and for every partition whose committed
offset is behind: the committed offset, the last stable offset (what a read_committed
consumer may read up to) and the high watermark. A last stable offset below the high
watermark means an open transaction blocks every read_committed reader of that
partition; a committed offset below a last stable offset with an owner that handles
nothing means a stuck consumer.

After an exactly-once scenario, :func:`hanging_facts` says what a restarted broker left
hanging: the transactions whose markers its coordinator skipped (its log), those the
workers ended (their logs) and any still hanging on the scenario's partitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
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


_SKIPPED = "likely deleted already"
"""The transaction coordinator's log line for markers it skipped (partitions unknown)."""
_ENDED = "ended a transaction left hanging"
"""A worker's log line for a hanging transaction of its id that it ended."""


def hanging_facts(
    bootstrap: str, replica_logs: Iterable[Path], broker_log: Path | None
) -> dict[str, Any]:
    """Return the broker's skipped-marker lines, what the workers ended, and what is left."""
    from choreo.transports.config import KafkaConfig
    from choreo.transports.hanging import find_hanging

    ended = [
        f"{path.name}: {line.strip()[:300]}"
        for path in replica_logs
        for line in path.read_text(errors="replace").splitlines()
        if _ENDED in line
    ]
    skipped = None
    if broker_log is not None and broker_log.is_file():
        skipped = [
            ln[:300] for ln in broker_log.read_text(errors="replace").splitlines() if _SKIPPED in ln
        ]
    try:
        config = KafkaConfig(bootstrap_servers=bootstrap)
        left = [h.describe() for h in find_hanging(config, min_age=0.0, timeout=_TIMEOUT)]
    except Exception as error:  # a diagnosis never fails the run
        left = [f"error: {str(error)[:300]}"]
    return {
        "skipped_marker_lines": None if skipped is None else len(skipped),
        "skipped_examples": (skipped or [])[:3],
        "ended_by_workers": len(ended),
        "ended_examples": ended[:5],
        "left": left[:10],
    }
