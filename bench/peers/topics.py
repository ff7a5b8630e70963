"""The benchmark's topics and consumer groups: recreate topics empty, wait for groups to settle.

Every run starts on empty topics (deleted and recreated with the run's partition count),
and the timed phase starts only once each service's consumer group is stable with every
replica a member, so no rebalance falls into the measurement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]


def recreate_topics(
    bootstrap: str, topics: list[str], partitions: int, timeout: float = 90.0
) -> None:
    """Delete ``topics`` if they exist and create them empty with ``partitions`` partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    _delete_and_wait(admin, topics, deadline)
    missing = list(topics)
    while missing:
        missing = _create(admin, missing, partitions)
        if missing:  # their deletion was still being finished: delete and try again
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot recreate {missing}")
            time.sleep(0.5)
            _delete_and_wait(admin, missing, deadline)
    _wait_for_leaders(admin, topics, partitions, deadline)


def _delete_and_wait(admin: AdminClient, topics: list[str], deadline: float) -> None:
    """Delete those of ``topics`` that exist and wait until the metadata no longer lists them."""
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [t for t in topics if t in existing]
    if doomed:
        for topic, future in admin.delete_topics(doomed, operation_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise RuntimeError(f"cannot delete {topic}: {exc}") from exc
    while doomed:
        existing = set(admin.list_topics(timeout=30).topics)
        doomed = [t for t in doomed if t in existing]
        if doomed and time.monotonic() > deadline:
            raise RuntimeError(f"topics still exist after deletion: {doomed}")
        if doomed:
            time.sleep(0.2)


def _create(admin: AdminClient, topics: list[str], partitions: int) -> list[str]:
    """Create ``topics``; return those that still existed (a deletion not yet finished)."""
    futures = admin.create_topics(
        [NewTopic(t, partitions, 1) for t in topics], operation_timeout=30
    )
    again = []
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create {topic}: {exc}") from exc
            again.append(topic)
    return again


def _wait_for_leaders(
    admin: AdminClient, topics: list[str], partitions: int, deadline: float
) -> None:
    """Wait until every partition of ``topics`` has a leader."""
    while True:
        metadata = admin.list_topics(timeout=30).topics
        ready = all(
            t in metadata
            and metadata[t].error is None
            and len(metadata[t].partitions) == partitions
            and all(p.leader >= 0 for p in metadata[t].partitions.values())
            for t in topics
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("topics have no leaders yet")
        time.sleep(0.2)


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete ``topics`` (best effort; used by the tests to clean up)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            future.result()


def wait_for_groups(
    bootstrap: str,
    members: Mapping[str, int],
    check: Callable[[], object] = lambda: None,
    timeout: float = 90.0,
) -> float:
    """Wait until each group in ``members`` is stable with that many members; return seconds.

    ``check`` is called between two looks (it raises when a member's process died).
    Raises RuntimeError after ``timeout`` seconds, naming the groups that are not.
    """
    from confluent_kafka import ConsumerGroupState

    admin = AdminClient({"bootstrap.servers": bootstrap})
    started = time.monotonic()
    waiting = dict(members)
    seen: dict[str, str] = {}
    while waiting:
        futures = admin.describe_consumer_groups(list(waiting), request_timeout=10)
        for group, future in futures.items():
            with contextlib.suppress(KafkaException):
                found = future.result()
                seen[group] = f"{found.state.name} with {len(found.members)} member(s)"
                if (
                    found.state == ConsumerGroupState.STABLE
                    and len(found.members) == waiting[group]
                ):
                    del waiting[group]
        if not waiting:
            break
        check()
        if time.monotonic() - started > timeout:
            states = {g: seen.get(g, "?") for g in sorted(waiting)}
            raise RuntimeError(f"consumer groups not stable in {timeout:.0f} s: {states}")
        time.sleep(0.2)
    return time.monotonic() - started
