"""Rebuild an orchestrator's sagas from Kafka: no saga database, the log is the state.

When the orchestrator's worker is assigned partitions (at start and at each rebalance;
:mod:`choreo.orchestration.ownership`), it reads, from the beginning, every topic of its
saga: the start event's, its commands' and compensation commands', the replies', its
timeouts', its deadline notices' and its terminal events' topics. Each record of its
saga (saga header) is folded into its run
(:meth:`~choreo.orchestration.engine.Engine.observe`); the fold is order-independent, so
partitions read in any interleaving give the same runs.

With several replicas, each rebuilds only the sagas of the partitions it was just
assigned (``partitions=``): a saga's home is the partition number its records arrive on
in the orchestrator's input topics (its start, the replies, its deadline notices), which
is the same number in every topic when they have as many partitions and every record is
keyed by correlation id (choreo keys them so, with Kafka's murmur2 partitioner on every
transport). So only those partition numbers are read, of every saga topic with the input
topics' partition count; a saga topic with another count (created elsewhere) is read
whole, and when the input topics disagree on their count (a layout the ownership already
warns about) everything is read. A rebuild's cost is its share of the log.

What this guarantees: every command the previous incarnation published is known before
the worker handles anything, so nothing published is decided again; an event the previous
incarnation handled but whose outputs never reached Kafka is redelivered by the worker
(its offset was not committed) and its missing outputs are sent then.

When the read stops: the end of every partition read is asked of the broker when the
read's consumer gets them (with ``read_committed``, the last stable offset where the
client tells it), and the read stops once its position reached every end
(:func:`~choreo.transports.catchup.read_to_ends`). A fetch that stalls, for however long,
makes the rebuild wait for it instead of cutting it short; records written after the
ends were taken are the worker's to handle. ``max_seconds`` bounds the whole read: past
it the rebuild stops with a WARNING naming how many partitions were not read to their
end, and the worker folds their newest records as it goes. A transport whose consumers
cannot tell ends and positions is read until nothing arrived for ``idle_timeout``
seconds. Topic retention must outlive the longest saga.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from choreo.errors import ChoreoError
from choreo.model.events import Event, event_type_of
from choreo.model.topics import TopicNaming
from choreo.orchestration.state import SagaRun
from choreo.runtime.routing import read_envelope
from choreo.transports.base import TopicPartition, Transport
from choreo.transports.catchup import CatchUp, Select, read_to_ends

if TYPE_CHECKING:
    from choreo.orchestration.declaration import Orchestrator
    from choreo.runtime.worker import Serde

__all__ = ["rebuild", "saga_topics"]

logger = logging.getLogger(__name__)


def saga_topics(orch: Orchestrator, naming: TopicNaming) -> list[str]:
    """Return every topic an orchestrator reads or writes for its saga."""
    types = {event_type_of(orch.saga.start)}
    for spec in orch.service.handlers:
        types.update(spec.consumed_types)
        types.update(spec.emitted_types)
    return sorted({naming(t) for t in types})


def owned_share(inputs: Collection[str], partitions: Collection[int] | None) -> Select | None:
    """Return the partitions a rebuild of the sagas of ``partitions`` must read (None: all).

    Of each topic with the input topics' partition count, the numbers in ``partitions``;
    every partition of the other topics; everything when the input topics' counts differ.
    """
    if partitions is None:
        return None
    numbers = frozenset(partitions)

    def select(assigned: Sequence[TopicPartition]) -> set[TopicPartition]:
        counts = Counter(tp.topic for tp in assigned)
        shared = {counts[topic] for topic in inputs if topic in counts}
        if len(shared) != 1:
            return set(assigned)
        (count,) = shared
        return {tp for tp in assigned if counts[tp.topic] != count or tp.partition in numbers}

    return select


def rebuild(
    orch: Orchestrator,
    transport: Transport,
    serde: Serde,
    *,
    topic_naming: TopicNaming,
    partitions: Collection[int] | None = None,
    idle_timeout: float = 1.0,
    max_seconds: float = 300.0,
    assign_timeout: float = 30.0,
) -> int:
    """Fold every record of ``orch``'s saga up to the topics' ends; return how many were folded.

    ``partitions`` (partition numbers) keeps only the sagas whose records arrive on those
    partitions of the orchestrator's input topics (the ones a replica was just assigned),
    and reads only those partitions where that is safe (:func:`owned_share`); None keeps
    every saga. The runs kept replace the engine's
    (:meth:`~choreo.orchestration.engine.Engine.adopt`). ``max_seconds`` bounds the read,
    ``assign_timeout`` the wait for its reader's partitions (past it nothing was read, and
    a WARNING says so); ``idle_timeout`` only matters for a transport that cannot tell
    where partitions end.
    """
    engine = orch.engine
    saga = orch.saga.name
    inputs = {topic_naming(t) for t in orch.service.consumed_types}
    folded = 0
    runs: dict[str, SagaRun] = {}
    homes: dict[str, int] = {}
    report = CatchUp()
    for record in read_to_ends(
        transport,
        saga_topics(orch, topic_naming),
        select=owned_share(inputs, partitions),
        max_seconds=max_seconds,
        assign_timeout=assign_timeout,
        idle_timeout=idle_timeout,
        report=report,
    ):
        try:
            envelope = read_envelope(dict(record.headers))
        except ChoreoError:
            continue
        if envelope.saga != saga:
            continue
        event: Event | None
        try:
            event = serde.decode(envelope.event_type, record.value or b"")
        except Exception:  # an event this orchestrator cannot decode only counts by id
            event = None
        cid = envelope.correlation_id
        run = runs.get(cid)
        if run is None:
            run = runs[cid] = SagaRun(saga, cid)
        engine.observe(run, envelope, event)
        if record.topic in inputs:
            homes.setdefault(cid, record.partition)
        folded += 1
    if report.timed_out and not report.assigned:
        logger.warning(
            "%s: rebuild read nothing (its reader was assigned no partition within %g s): "
            "the sagas under way were not rebuilt",
            orch.name,
            assign_timeout,
        )
    elif report.timed_out:
        logger.warning(
            "%s: rebuild stopped after %.0f s with %d partition(s) not read to their end; "
            "the worker folds the rest",
            orch.name,
            max_seconds,
            len(report.behind),
        )
    wanted = None if partitions is None else frozenset(partitions)
    kept = {
        cid: run
        for cid, run in runs.items()
        if cid in homes and (wanted is None or homes[cid] in wanted)
    }
    engine.adopt(kept, homes)
    logger.info(
        "%s: rebuilt %d saga(s) of %s from %d record(s) in %.1f s (%d partition(s) read to "
        "their end, %d not needed)",
        orch.name,
        len(kept),
        "every partition" if wanted is None else f"partition(s) {sorted(wanted)}",
        folded,
        report.seconds,
        len(report.ends),
        len(report.skipped),
    )
    return folded
