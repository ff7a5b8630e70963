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
transport). The read still covers the whole topics: the Transport API reads by group,
not by partition, so a rebuild's cost is the log's size, whatever the share kept.

What this guarantees: every command the previous incarnation published is known before
the worker handles anything, so nothing published is decided again; an event the previous
incarnation handled but whose outputs never reached Kafka is redelivered by the worker
(its offset was not committed) and its missing outputs are sent then.

Cost and limits: the read is proportional to what the topics retain; it stops when no
record arrived for ``idle_timeout`` seconds (or after ``max_seconds``, with a warning: a
busy log then leaves the newest records to the worker, which folds them as it goes).
Topic retention must outlive the longest saga. (Reading each partition up to its end
offset would not depend on timing; the broker did not answer end-offset queries for
freshly created partitions promptly enough to rely on them here.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from choreo.errors import ChoreoError
from choreo.model.events import Event, event_type_of
from choreo.model.topics import TopicNaming
from choreo.orchestration.state import SagaRun
from choreo.runtime.routing import read_envelope
from choreo.tracker.live import read_topics
from choreo.transports.base import Transport

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


def rebuild(
    orch: Orchestrator,
    transport: Transport,
    serde: Serde,
    *,
    topic_naming: TopicNaming,
    partitions: Collection[int] | None = None,
    idle_timeout: float = 1.0,
    max_seconds: float = 300.0,
) -> int:
    """Fold every record of ``orch``'s saga held by its topics; return how many were folded.

    ``partitions`` (partition numbers) keeps only the sagas whose records arrive on those
    partitions of the orchestrator's input topics (the ones a replica was just assigned);
    None keeps every saga. The runs kept replace the engine's
    (:meth:`~choreo.orchestration.engine.Engine.adopt`).
    """
    engine = orch.engine
    saga = orch.saga.name
    inputs = {topic_naming(t) for t in orch.service.consumed_types}
    started = time.monotonic()
    folded = 0
    runs: dict[str, SagaRun] = {}
    homes: dict[str, int] = {}
    for record in read_topics(
        transport, saga_topics(orch, topic_naming), idle_timeout=idle_timeout
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
        if time.monotonic() - started > max_seconds:
            logger.warning(
                "%s: rebuild stopped after %.0f s; the worker folds the rest",
                orch.name,
                max_seconds,
            )
            break
    wanted = None if partitions is None else frozenset(partitions)
    kept = {
        cid: run
        for cid, run in runs.items()
        if cid in homes and (wanted is None or homes[cid] in wanted)
    }
    engine.adopt(kept, homes)
    logger.info(
        "%s: rebuilt %d saga(s) of %s from %d record(s) in %.1f s",
        orch.name,
        len(kept),
        "every partition" if wanted is None else f"partition(s) {sorted(wanted)}",
        folded,
        time.monotonic() - started,
    )
    return folded
