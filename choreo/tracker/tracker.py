"""The correlation-id tracker: feed it records, ask it about sagas.

:class:`Tracker` keeps every saga it has seen, keyed by correlation id, and re-folds a
saga (:func:`choreo.tracker.fold.fold`) from the set of its events whenever a new event
arrives, so its answer never depends on the order partitions were read in. It is put
together from one module per job: :mod:`~choreo.tracker.keeping` (the maps; full and
packed sagas, bounded memory), :mod:`~choreo.tracker.feeding` (the batched hot loop),
:mod:`~choreo.tracker.screening` (unreadable records, dead letters),
:mod:`~choreo.tracker.deadlines`, :mod:`~choreo.tracker.checkpointing` and
:mod:`~choreo.tracker.stats`; this module holds the constructor and the questions.

Questions are answered from a saga index (:mod:`choreo.tracker.index`) kept in start-time
order per status, saga type and stuck mark, brought up to date lazily before each answer:
a page of :meth:`Tracker.find` costs O(page), :meth:`Tracker.count` and
:meth:`Tracker.counts` O(log n) or less, and :meth:`Tracker.check_deadlines` looks only
at the sagas whose deadline has passed.

Thread-safe: one feeding thread and any number of reading threads (the web viewer) may
use a tracker at once; :meth:`Tracker.wait_for_change` lets readers block until something
changed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final

from choreo.choreography.graph import Choreography
from choreo.choreography.service import Service
from choreo.tracker.checkpointing import Checkpointing
from choreo.tracker.compact import Symbols
from choreo.tracker.deadlines import DeadlineChecks
from choreo.tracker.entries import (
    Entry,
    packed_events,
)
from choreo.tracker.feeding import SagaFeeding
from choreo.tracker.fold import DEFAULT_DEADLINE_MS
from choreo.tracker.graphfacts import GraphFacts, facts_from
from choreo.tracker.index import SagaIndex
from choreo.tracker.keeping import logger
from choreo.tracker.materializing import Materializing
from choreo.tracker.model import DeadLetterNote, SagaStatus, SagaTrace
from choreo.tracker.query import SagaQuery
from choreo.tracker.stats import TrackerStats
from choreo.tracker.store import CheckpointStore
from choreo.transports.base import TopicPartition

__all__ = ["Tracker", "TrackerStats"]

_ALL: Final = SagaQuery()

class Tracker(SagaFeeding, DeadlineChecks, Checkpointing, Materializing):
    """Folds records into saga traces by correlation id and answers questions about them.

    ``choreography`` (a :class:`choreo.Choreography` or its services) adds per-step
    deadlines and the compensatable steps; ``default_deadline_s`` is the deadline when
    none is declared; ``clock`` returns epoch seconds (for :meth:`check_deadlines`);
    ``checkpoint`` saves offsets and summaries (see :meth:`checkpoint`); ``max_open``
    bounds the running sagas kept in full and ``keep_finished`` the finished ones;
    ``decode`` turns a payload's bytes into a dict for :meth:`payload` (e.g.
    ``EventSerde.decode_dict``), and ``max_payloads`` bounds the payloads kept for it.

    Only a record with a valid envelope (see :mod:`choreo.tracker.accounting`) and a
    payload starts or changes a saga; with ``decode`` and ``check_payloads`` the payload
    must also decode, as the type its headers name. Every other record is counted in
    :attr:`stats` under its reason; dead letters are noted on their saga's timeline
    (:attr:`SagaTrace.dead_letters`).
    """

    def __init__(
        self,
        *,
        choreography: Choreography | Iterable[Service] | None = None,
        default_deadline_s: float = DEFAULT_DEADLINE_MS / 1000,
        clock: Callable[[], float] = time.time,
        checkpoint: CheckpointStore | None = None,
        max_open: int = 100_000,
        keep_finished: int = 1_000,
        decode: Callable[[bytes], Any] | None = None,
        max_payloads: int = 10_000,
        check_payloads: bool = True,
    ) -> None:
        if max_open < 1 or keep_finished < 0 or max_payloads < 0:
            raise ValueError("max_open must be >= 1, keep_finished and max_payloads >= 0")
        if choreography is not None and not isinstance(choreography, Choreography):
            choreography = Choreography.from_services(choreography)
        self.choreography: Choreography | None = choreography
        self.facts: GraphFacts | None = (
            facts_from(choreography) if choreography is not None else None
        )
        self.default_deadline_ms = int(default_deadline_s * 1000)
        self.clock = clock
        self.store = checkpoint
        self.max_open = max_open
        self.keep_finished = keep_finished
        self.decode = decode
        self.max_payloads = max_payloads
        self.check_payloads = check_payloads
        self.stats = TrackerStats()
        self.on_finished: Callable[[SagaTrace], None] | None = None
        """Called (under the tracker's lock, keep it short) with each saga that just ended."""
        self.symbols = Symbols()
        self.version = 0
        self._cond = threading.Condition(threading.RLock())
        self._full: dict[str, Entry] = {}
        self._packed: dict[str, bytes] = {}  # bytes only: the garbage collector skips it
        self._index = SagaIndex(self._filing, self._filings, self._size)
        self._open: OrderedDict[str, None] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._unsaved: set[str] = set()
        self._waiting: dict[str, Entry] = {}
        self._tracking = checkpoint is not None
        self._stats_of = {}
        self._deferred = set()
        self._counts: dict[SagaStatus, int] = dict.fromkeys(SagaStatus, 0)
        self._types: dict[str, int] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._resume: dict[TopicPartition, int] = {}
        self._saved_symbols = 0
        self._payloads: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._text: dict[bytes, str] = {}
        self._shapes = {}
        self._notes: OrderedDict[str, list[DeadLetterNote]] = OrderedDict()
        self._noted = False
        if checkpoint is not None:
            self._load(checkpoint)

    def kept_as(self, correlation_id: str) -> str | None:
        """Return how a saga is kept: ``"full"``, ``"packed"`` in memory, ``"stored"`` only."""
        with self._cond:
            entry = self._lookup(correlation_id)
        if entry is None:
            return None
        if not isinstance(entry, bytes):
            return "full"
        return "packed" if packed_events(entry) is not None else "stored"

    def get(self, correlation_id: str) -> SagaTrace | None:
        """Return the trace of one saga, or None when its correlation id was never seen."""
        with self._cond:
            entry = self._lookup(correlation_id)
            if entry is None:
                return None
            return self._with_notes(correlation_id, self._trace_of(correlation_id, entry))

    def _with_notes(self, cid: str, trace: SagaTrace) -> SagaTrace:
        """Return ``trace`` carrying the dead letters noted for its saga."""
        notes = self._notes.get(cid)
        if notes:
            trace.dead_letters = list(notes)
        return trace

    def find(
        self, query: SagaQuery | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SagaTrace]:
        """Return a page of the sagas matching ``query`` (all when None), newest first.

        Costs O(offset + limit) index steps plus the traces returned, whatever the number
        of sagas; a ``search`` scans the admitted sagas until the page is full.
        """
        with self._cond:
            index = self._index
            index.sync()
            full, packed, trace_of = self._full, self._packed, self._trace_of
            traces = [
                (cid, trace_of(cid, full[cid] if cid in full else packed[cid]))
                for cid in index.find(query or _ALL, limit, offset)
            ]
            if self._notes:
                return [self._with_notes(cid, trace) for cid, trace in traces]
            return [trace for _, trace in traces]

    def count(self, query: SagaQuery | None = None) -> int | None:
        """Return how many sagas match ``query`` (all when None); None for a ``search``."""
        with self._cond:
            self._index.sync()
            return self._index.count(query or _ALL)

    def sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        stuck_only: bool = False,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SagaTrace]:
        """Return the sagas matching every given filter, newest first (see :class:`SagaQuery`).

        The keyword form of :meth:`find`; ``limit``/``offset`` page.
        """
        query = SagaQuery(status, saga, since_ms, until_ms, stuck_only, search)
        return self.find(query, limit=limit, offset=offset)

    def counts(self) -> dict[SagaStatus, int]:
        """Return how many sagas have each status (every status present, zeros included)."""
        with self._cond:
            return dict(self._counts)

    def total(self) -> int:
        """Return how many sagas (correlation ids) the tracker knows."""
        with self._cond:
            return self._size()

    def saga_types(self) -> list[str]:
        """Return the saga names seen, sorted."""
        with self._cond:
            return sorted(name for name, count in self._types.items() if count > 0)

    def payload(self, correlation_id: str, event_id: str) -> dict[str, Any] | None:
        """Return an event's decoded payload, or None (no ``decode``, or not kept any more)."""
        with self._cond:
            raw = self._payloads.get((correlation_id, event_id))
        if raw is None or self.decode is None:
            return None
        try:
            decoded = self.decode(raw)
        except Exception:
            logger.debug("payload of %s/%s does not decode", correlation_id, event_id,
                         exc_info=True)
            return None
        if isinstance(decoded, tuple) and len(decoded) == 2:
            decoded = decoded[1]
        return decoded if isinstance(decoded, dict) else None

    def wait_for_change(self, version: int, timeout: float | None = None) -> int:
        """Block until :attr:`version` moves past ``version`` (or ``timeout``); return it."""
        with self._cond:
            self._cond.wait_for(lambda: self.version > version, timeout)
            return self.version
