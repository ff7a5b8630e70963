"""Helpers of the runtime tests: read a saga back from a bus, drive workers, simulate crashes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from choreo.model.envelope import Envelope, Header, headers_to_dict
from choreo.runtime.worker import Worker
from choreo.transports.base import (
    Consumer,
    Headers,
    Producer,
    RebalanceCallback,
    Record,
    TopicPartition,
    Transport,
)
from choreo.transports.memory import MemoryBus


class Crash(BaseException):
    """Raised to simulate the process dying at a chosen point."""


def run_until_idle(workers: Iterable[Worker], *, max_rounds: int = 1000) -> int:
    """Give each worker batches round-robin until none handles anything; return the total."""
    workers = list(workers)
    total = 0
    for _ in range(max_rounds):
        handled = sum(w.run_once(0.0) for w in workers)
        if not handled:
            return total
        total += handled
    raise AssertionError("workers still busy")


def saga_records(bus: MemoryBus, correlation_id: str) -> list[Record]:
    """Return the saga's records on ``bus`` (dead letters excluded) in causal order.

    Records are ordered by their depth in the causation tree (the start is 0), then by
    production time: for a saga's chain of events that is the order they happened in.
    """
    found = []
    for topic in bus.topics():
        if topic.startswith("choreo.deadletter"):
            continue
        for record in bus.records(topic):
            if (
                headers_to_dict(record.headers).get(Header.CORRELATION_ID)
                == correlation_id.encode()
            ):
                found.append(record)
    headers = {id(r): headers_to_dict(r.headers) for r in found}
    parent_of = {h[Header.EVENT_ID]: h.get(Header.CAUSATION_ID) for h in headers.values()}

    def depth(event_id: bytes) -> int:
        parent = parent_of.get(event_id)
        return 0 if parent is None or parent not in parent_of else depth(parent) + 1

    return sorted(
        found,
        key=lambda r: (
            depth(headers[id(r)][Header.EVENT_ID]),
            int(headers[id(r)][Header.PRODUCED_AT]),
        ),
    )


def envelopes(records: Iterable[Record]) -> list[Envelope]:
    """Return the envelopes of ``records``."""
    return [Envelope.from_headers(headers_to_dict(r.headers)) for r in records]


def by_type(bus: MemoryBus, topic: str) -> list[Record]:
    """Return the records of one topic."""
    return bus.records(topic)


@dataclass
class _Control:
    """Which failures a :class:`ControlledTransport` injects."""

    crash_before_flush: int = 0
    crash_after_flush: int = 0
    fail_flush: int = 0
    dead: bool = False
    flushes: int = 0  # flushes that went through
    instance_ids: list[str | None] = field(default_factory=list)  # one per consumer made
    polled: list[Record] = field(default_factory=list)  # every record its consumers polled


class _ControlledProducer:
    """A producer whose flush can fail or "kill the process" on demand."""

    def __init__(self, inner: Producer, control: _Control) -> None:
        self._inner = inner
        self._control = control

    @property
    def transactional(self) -> bool:
        return self._inner.transactional

    def publish(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        if self._control.crash_before_flush > 0:
            self._control.crash_before_flush -= 1
            raise Crash("died before publishing")
        self._inner.publish(topic, value, key=key, headers=headers)

    def flush(self, timeout: float | None = None) -> None:
        from choreo.errors import DeliveryError

        if self._control.fail_flush > 0:
            self._control.fail_flush -= 1
            raise DeliveryError("broker unavailable (injected)")
        self._inner.flush(timeout)
        self._control.flushes += 1
        if self._control.crash_after_flush > 0:
            self._control.crash_after_flush -= 1
            raise Crash("died after publishing")

    def begin_transaction(self) -> None:
        self._inner.begin_transaction()

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: Consumer, timeout: float = 30.0
    ) -> None:
        self._inner.send_offsets_to_transaction(offsets, consumer, timeout)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        self._inner.commit_transaction(timeout)

    def abort_transaction(self, timeout: float = 30.0) -> None:
        self._inner.abort_transaction(timeout)

    def close(self) -> None:
        self._inner.close()


class _ControlledConsumer:
    """A consumer whose rebalance callbacks stop running once the "process" is dead."""

    def __init__(self, inner: Consumer, control: _Control) -> None:
        self._inner = inner
        self._control = control

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        def guard(callback: RebalanceCallback | None) -> RebalanceCallback | None:
            if callback is None:
                return None

            def call(partitions: list[TopicPartition]) -> None:
                if not self._control.dead:
                    callback(partitions)

            return call

        self._inner.subscribe(topics, on_assign=guard(on_assign), on_revoke=guard(on_revoke))

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        records = self._inner.poll(max_records, timeout)
        self._control.polled.extend(records)
        return records

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._inner.commit(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._inner.seek(partition, offset)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._inner.pause(partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._inner.resume(partitions)

    def assignment(self) -> list[TopicPartition]:
        return self._inner.assignment()

    def close(self, *, leave_group: bool = False) -> None:
        self._inner.close(leave_group=leave_group)


@dataclass
class ControlledTransport:
    """Wraps a transport: injects flush failures and crashes, and can kill its clients."""

    inner: Transport
    control: _Control = field(default_factory=_Control)
    consumers: list[Consumer] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        return _ControlledProducer(
            self.inner.producer(transactional_id=transactional_id), self.control
        )

    def consumer(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> Consumer:
        self.control.instance_ids.append(instance_id)
        consumer = _ControlledConsumer(
            self.inner.consumer(group_id, from_beginning=from_beginning, instance_id=instance_id),
            self.control,
        )
        self.consumers.append(consumer)
        return consumer

    def create_topics(
        self, topics: Sequence[str], *, partitions: int = 1, **replication: Any
    ) -> None:
        self.inner.create_topics(topics, partitions=partitions, **replication)

    def list_topics(self) -> list[str]:
        return self.inner.list_topics()

    def kill(self) -> None:
        """Close every consumer, running no callback: the process died, its group moves on."""
        self.control.dead = True
        for consumer in self.consumers:
            consumer.close()
        self.consumers.clear()
        self.control.dead = False
