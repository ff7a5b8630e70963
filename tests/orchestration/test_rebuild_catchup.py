"""A rebuild reads its partitions up to their ends: a stalled fetch makes it wait, not stop short.

The rebuild used to stop after ``idle_timeout`` (1 s) without a record, so a fetch that
stalled longer (a broker busy with a rebalance, a slow disk) left sagas out: the new
orchestrator then decided their steps again. It now reads each partition up to the end
the broker gave when the read's consumer was assigned it (``choreo.transports.catchup``).
Here a consumer whose fetches return nothing for 2.5 s after assignment stands for the
stalled broker, on the real memory bus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from orch_kit import DEADLINE
from orch_participants import SCHEMAS_DIR, Script, build, submitted

from choreo.orchestration import Orchestrator
from choreo.orchestration.rebuild import owned_share, rebuild, saga_topics
from choreo.runtime import WorkerConfig
from choreo.testing import SagaTestKit
from choreo.transports.base import Record, TopicPartition, Transport
from choreo.transports.memory import MemoryBus, MemoryTransport
from services import orchestrated
from services.saga import OrderFulfillmentOrchestrated

STALL_S = 2.5
"""How long the stalled consumer's fetches return nothing (more than the old 1 s idle stop)."""


class _StalledConsumer:
    """A consumer whose records reach the caller only ``stall`` seconds after its first poll.

    What it fetched meanwhile is held back, and its positions are those of the records
    handed out (as a Kafka client's are), so a reader cannot tell the stall from a slow
    broker.
    """

    def __init__(self, inner: Any, stall: float) -> None:
        self.inner = inner
        self.stall = stall
        self.until: float | None = None
        self.held: list[Record] = []

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        now = time.monotonic()
        if self.until is None:
            self.until = now + self.stall
        if now < self.until:
            self.held.extend(self.inner.poll(max_records, 0.0))
            time.sleep(min(timeout, self.until - now))
            return []
        out, self.held = [*self.held, *self.inner.poll(max_records, timeout)], []
        return out

    def positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {} if self.held else dict(self.inner.positions(partitions))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _StalledTransport:
    """The kit's transport, whose consumers stall (see :class:`_StalledConsumer`)."""

    def __init__(self, inner: Transport, stall: float) -> None:
        self.inner = inner
        self.stall = stall
        self.name = inner.name

    def consumer(self, group_id: str, **options: Any) -> Any:
        return _StalledConsumer(self.inner.consumer(group_id, **options), self.stall)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def kit4() -> Iterator[tuple[SagaTestKit, Orchestrator]]:
    """A kit of the orchestrated shop on a memory bus whose saga topics have 4 partitions."""
    orch = orchestrated.create(deadline=DEADLINE)
    transport = MemoryTransport(MemoryBus(default_partitions=4))
    transport.create_topics(saga_topics(orch, WorkerConfig().topic_naming), partitions=4)
    kit = SagaTestKit(
        [orch, *build(Script(silent={"prepare"}))], schemas_dir=SCHEMAS_DIR, transport=transport
    )
    try:
        yield kit, orch
    finally:
        kit.close()


def _start(kit: SagaTestKit, orders: int) -> list[str]:
    order = kit.workers["order"].service
    return [
        kit.when(OrderFulfillmentOrchestrated, submitted(f"o-{n}"), correlation_id=f"o-{n}",
                 service=order)
        for n in range(orders)
    ]


def _same_runs(old: Orchestrator, new: Orchestrator, cids: list[str]) -> None:
    for cid in cids:
        before, after = old.engine.runs[cid], new.engine.runs[cid]
        assert after.phase is before.phase, cid
        for name, state in before.steps.items():
            assert set(after.steps[name].commands) == set(state.commands), (cid, name)


def test_a_fetch_stalled_longer_than_a_second_still_rebuilds_every_saga(
    kit4: tuple[SagaTestKit, Orchestrator],
) -> None:
    """2.5 s without a record after assignment: the rebuild waits and gets every saga."""
    kit, orch = kit4
    cids = _start(kit, 8)
    kit.advance(DEADLINE)  # every saga times out on prepare: commands and compensations
    fresh = orchestrated.create(deadline=DEADLINE)
    stalled = _StalledTransport(kit.transport, STALL_S)
    started = time.monotonic()
    folded = rebuild(fresh, stalled, kit.serde, topic_naming=kit.config.topic_naming)
    assert time.monotonic() - started >= STALL_S  # it waited out the stall
    assert folded > 0
    assert set(fresh.engine.runs) == set(cids)
    _same_runs(orch, fresh, cids)


def test_a_read_past_max_seconds_stops_with_a_warning(
    kit4: tuple[SagaTestKit, Orchestrator], caplog: pytest.LogCaptureFixture
) -> None:
    """A stall longer than max_seconds: the rebuild stops there and says so once."""
    kit, _ = kit4
    _start(kit, 2)
    fresh = orchestrated.create(deadline=DEADLINE)
    stalled = _StalledTransport(kit.transport, 30.0)
    caplog.set_level(logging.WARNING, logger="choreo.orchestration.rebuild")
    started = time.monotonic()
    folded = rebuild(
        fresh, stalled, kit.serde, topic_naming=kit.config.topic_naming, max_seconds=1.0
    )
    assert time.monotonic() - started < 10
    assert folded == 0
    warnings = [  # the rebuild's own: another test's client thread may warn meanwhile
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "choreo.orchestration.rebuild"
    ]
    assert len(warnings) == 1, warnings
    assert "rebuild stopped after 1 s" in warnings[0]
    assert "not read to their end" in warnings[0]


def test_each_replica_reads_only_its_partitions_and_rebuilds_the_same_sagas(
    kit4: tuple[SagaTestKit, Orchestrator],
) -> None:
    """Partition by partition, the rebuilt sagas are the full rebuild's, from less reading."""
    kit, orch = kit4
    cids = _start(kit, 12)
    kit.advance(DEADLINE)
    naming = kit.config.topic_naming
    full = orchestrated.create(deadline=DEADLINE)
    everything = rebuild(full, kit.transport, kit.serde, topic_naming=naming)
    assert set(full.engine.runs) == set(cids)
    union: set[str] = set()
    read = 0
    for number in range(4):
        share = orchestrated.create(deadline=DEADLINE)
        read += rebuild(share, kit.transport, kit.serde, topic_naming=naming, partitions={number})
        homes = {cid for cid, home in full.engine.home.items() if home == number}
        assert set(share.engine.runs) == homes, number
        _same_runs(orch, share, sorted(homes))
        union |= homes
    assert union == set(cids)
    assert read == everything  # each record was read by one replica only


def test_the_share_read_is_every_partition_when_the_input_topics_disagree() -> None:
    """Input topics with different partition counts: the rebuild reads everything."""
    select = owned_share({"a", "b"}, {1})
    assert select is not None
    aligned = [TopicPartition(t, p) for t in ("a", "b") for p in range(3)]
    other = [TopicPartition("c", p) for p in range(2)]
    assert select([*aligned, *other]) == {
        TopicPartition("a", 1), TopicPartition("b", 1), *other
    }
    skewed = [*aligned, TopicPartition("b", 3)]
    assert select(skewed) == set(skewed)
    assert owned_share({"a"}, None) is None


class _UnassignedTransport(_StalledTransport):
    """The kit's transport, whose consumers are never given a partition (a group
    coordinator that does not answer)."""

    def consumer(self, group_id: str, **options: Any) -> Any:
        consumer = self.inner.consumer(group_id, **options)
        consumer.subscribe = lambda topics: None  # joins nothing, so nothing is assigned
        return consumer


def test_a_reader_never_assigned_is_a_warning_that_nothing_was_read(
    kit4: tuple[SagaTestKit, Orchestrator], caplog: pytest.LogCaptureFixture
) -> None:
    """No partition within assign_timeout: the one WARNING says nothing was read (it used
    to say the read stopped after max_seconds with 0 partitions behind, as if complete)."""
    kit, _ = kit4
    _start(kit, 2)
    fresh = orchestrated.create(deadline=DEADLINE)
    caplog.set_level(logging.WARNING, logger="choreo.orchestration.rebuild")
    folded = rebuild(
        fresh,
        _UnassignedTransport(kit.transport, 0.0),
        kit.serde,
        topic_naming=kit.config.topic_naming,
        assign_timeout=0.5,
    )
    assert folded == 0
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "choreo.orchestration.rebuild"
    ]
    assert warnings == [
        "orchestrator: rebuild read nothing (its reader was assigned no partition within "
        "0.5 s): the sagas under way were not rebuilt"
    ]
