"""JSON views of the tracker's sagas: what the web viewer's HTTP API returns.

Every function here is a pure read of a :class:`TrackerReader` that returns plain
JSON-ready values; :mod:`choreo.viewer.web` only routes requests to them and encodes the
result with :func:`to_json`, which escapes ``<``, ``>`` and ``&`` so that no response can
be sniffed into markup.

The viewer depends on the read side of the tracker only (:class:`TrackerReader`, a
protocol), so it serves any object that answers those questions: the in-process
:class:`~choreo.tracker.tracker.Tracker`, or one fed by a
:class:`~choreo.tracker.live.LiveTracker`.

Search (the ``q`` parameter of ``/api/sagas``): without a business-key index it finds
correlation ids containing the text. With one (a :class:`~choreo.tracker.keys.KeyIndex`
fed the same records, as ``choreo ui`` sets up), ``FIELD=VALUE`` finds the sagas with an
event whose payload field or header FIELD holds VALUE (``order_id=123``), and any other
text finds the correlation ids containing it *and* the sagas holding it as a value in any
field or header (``alice@example.com``); see :mod:`choreo.viewer.search`.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, Protocol

from choreo._version import __version__
from choreo.model.envelope import Role
from choreo.safety.jsonsafe import dumps
from choreo.safety.timestamps import parse_moment
from choreo.tracker.keys import KeyIndex
from choreo.tracker.model import DeadLetterNote, SagaStatus, SagaTrace, TraceEvent
from choreo.tracker.query import SagaQuery
from choreo.tracker.tracker import TrackerStats
from choreo.viewer.graph_view import declared_graph, observed_graph, short_type
from choreo.viewer.search import key_search

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadQueryError",
    "TraceApi",
    "TrackerReader",
    "json_default",
    "parse_status",
    "to_json",
]

logger = logging.getLogger(__name__)

DEFAULT_LIMIT: Final = 50
"""Rows per page when the request names no ``limit``."""
MAX_LIMIT: Final = 500
"""The largest page the API serves: the page never renders more rows than this."""
MAX_QUERY_CHARS: Final = 200
"""The longest search accepted (a correlation id, a value or FIELD=VALUE)."""
GRAPH_SAMPLE_SAGAS: Final = 2_000
"""How many of the newest sagas the observed graph is drawn from."""

_MARKED_ROLES: Final[Mapping[Role, str]] = {
    Role.COMPENSATION: "compensation",
    Role.FAILURE: "failure",
    Role.FAILED: "failure",
}


class TrackerReader(Protocol):
    """The read side of :class:`~choreo.tracker.tracker.Tracker` that the viewer uses."""

    stats: TrackerStats
    """How the records read were accounted for."""

    @property
    def version(self) -> int:
        """Return a number that increases on every change."""
        ...

    @property
    def choreography(self) -> object | None:
        """Return the declared choreography graph, or None when the tracker has none."""
        ...

    def get(self, correlation_id: str) -> SagaTrace | None:
        """Return one saga's trace, or None when the id is unknown."""
        ...

    def find(
        self, query: SagaQuery | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SagaTrace]:
        """Return a page of the sagas matching ``query`` (all when None), newest first."""
        ...

    def count(self, query: SagaQuery | None = None) -> int | None:
        """Return how many sagas match ``query``, or None when that is not cheap to say."""
        ...

    def counts(self) -> dict[SagaStatus, int]:
        """Return how many sagas are in each status (zeros included)."""
        ...

    def total(self) -> int:
        """Return how many sagas are tracked."""
        ...

    def saga_types(self) -> list[str]:
        """Return the names of the sagas seen, sorted."""
        ...

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until the version moves past ``version`` or ``timeout`` passes; return it."""
        ...

    def payload(self, correlation_id: str, event_id: str) -> dict[str, Any] | None:
        """Return an event's decoded payload, or None when it is not kept or not decodable."""
        ...


class BadQueryError(ValueError):
    """A query parameter is invalid; the message names it and says why."""


def json_default(value: object) -> object:
    """Return a JSON-ready stand-in for a payload value json cannot encode itself."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes_base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def to_json(value: object) -> bytes:
    """Return ``value`` as ASCII JSON in which ``<``, ``>`` and ``&`` are ``\\u`` escapes.

    The escapes keep a payload such as ``<script>`` inert even for a client that sniffs
    the response as HTML; the JSON still decodes to the same strings. Characters outside
    the BMP are surrogate-pair escapes, an unpaired surrogate becomes U+FFFD and a float
    that is not finite a string (see :func:`choreo.safety.jsonsafe.dumps`), so every JSON
    parser accepts the result. Values json cannot encode (bytes, datetimes, decimals,
    UUIDs, sets) are converted, never dropped.
    """
    return dumps(value, default=json_default).encode("ascii")


def _normal(name: str) -> str:
    """Return a status name folded for lenient matching (case, ``-``, ``_`` and spaces)."""
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


_STATUS_BY_NAME: Final[Mapping[str, SagaStatus]] = {_normal(s.value): s for s in SagaStatus}


def parse_status(text: str) -> SagaStatus:
    """Return the :class:`SagaStatus` named by ``text`` (any case; ``_``/``-`` ignored).

    Raises :class:`BadQueryError` naming the accepted values when ``text`` names none.
    """
    status = _STATUS_BY_NAME.get(_normal(text))
    if status is None:
        accepted = ", ".join(s.value for s in SagaStatus)
        raise BadQueryError(f"unknown status {text!r}; expected one of {accepted}")
    return status


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """Return the integer query parameter ``name`` within [low, high], or ``default``."""
    raw = query.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQueryError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadQueryError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _time_param(query: Mapping[str, str], name: str) -> int | None:
    """Return the time query parameter ``name`` as epoch ms (durations count back from now)."""
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse_moment(raw, now_ms=int(time.time() * 1000))
    except ValueError as exc:
        raise BadQueryError(f"{name}: {exc}") from None


def records_view(stats: TrackerStats) -> dict[str, Any]:
    """Return how the records read were accounted for, unreadable ones per reason."""
    counters: dict[str, Any] = {
        name: value for name, value in stats.as_dict().items() if ":" not in name
    }
    reasons = sorted(stats.reasons.items(), key=lambda item: (-item[1], item[0]))
    counters["unreadable"] = [{"reason": reason, "count": count} for reason, count in reasons]
    return counters


def _dead_letter_view(note: DeadLetterNote) -> dict[str, Any]:
    """Return one dead letter of a saga's timeline."""
    return {
        "event_id": note.event_id,
        "event_type": note.event_type,
        "reason": note.reason,
        "message": note.message,
        "error_class": note.error_class,
        "service": note.service,
        "failed_at_ms": note.failed_at_ms,
        "source": note.source,
        "where": note.where,
        "needs_human": note.needs_human,
    }


def saga_row(trace: SagaTrace) -> dict[str, Any]:
    """Return one saga as a row of the saga list (no events, just what the table shows)."""
    last: TraceEvent | None = trace.events[-1] if trace.events else None
    return {
        "correlation_id": trace.correlation_id,
        "saga": trace.saga,
        "status": trace.status.value,
        "state": trace.state.value,
        "started_at_ms": trace.started_at_ms,
        "ended_at_ms": trace.ended_at_ms,
        "duration_ms": trace.duration_ms,
        "event_count": len(trace.events),
        "last_event_type": last.event_type if last else None,
        "last_service": last.service if last else None,
        "last_at_ms": last.produced_at_ms if last else None,
        "violations": len(trace.violations),
        "deadline_ms": trace.deadline_ms,
    }


def _event_view(
    event: TraceEvent,
    *,
    index: int,
    lane: int,
    start_ms: int,
    index_by_id: Mapping[str, int],
    violating: set[str],
    dead: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Return one event of a saga's timeline with its lane, offset and marks."""
    marks: list[str] = []
    mark = _MARKED_ROLES.get(event.role)
    if mark is not None:
        marks.append(mark)
    if event.event_id in violating:
        marks.append("violation")
    if event.late:
        marks.append("late")
    if event.event_id in dead:
        marks.append("dead-lettered")
    return {
        "index": index,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "label": short_type(event.event_type),
        "role": event.role.value,
        "service": event.service,
        "lane": lane,
        "produced_at_ms": event.produced_at_ms,
        "t_ms": event.produced_at_ms - start_ms,
        "causation_id": event.causation_id,
        "cause_index": index_by_id.get(event.causation_id or ""),
        "step": event.step,
        "topic": event.topic,
        "partition": event.partition,
        "offset": event.offset,
        "late": event.late,
        "marks": marks,
    }


def saga_detail(trace: SagaTrace) -> dict[str, Any]:
    """Return one saga's full trace: its row, the lanes (one per service), events, violations.

    Lanes are the services in the order they first appear; each event names its lane,
    its offset from the saga's first event (``t_ms``) and the index of the event that
    caused it (``cause_index``, None when the cause was not observed).
    """
    lanes: dict[str, int] = {}
    lane_counts: Counter[str] = Counter()
    for event in trace.events:
        lanes.setdefault(event.service, len(lanes))
        lane_counts[event.service] += 1
    start_ms = trace.started_at_ms or 0
    index_by_id = {event.event_id: i for i, event in enumerate(trace.events)}
    violating = {v.event_id for v in trace.violations if v.event_id}
    dead = frozenset(note.event_id for note in trace.dead_letters)
    detail = saga_row(trace)
    detail.update(
        {
            "stuck": trace.stuck,
            "timed_out": trace.timed_out,
            "compensation_failed": trace.compensation_failed,
            "lanes": [{"service": name, "events": lane_counts[name]} for name in lanes],
            "events": [
                _event_view(
                    event,
                    index=i,
                    lane=lanes[event.service],
                    start_ms=start_ms,
                    index_by_id=index_by_id,
                    violating=violating,
                    dead=dead,
                )
                for i, event in enumerate(trace.events)
            ],
            "violations": [
                {"code": v.code, "message": v.message, "event_id": v.event_id}
                for v in trace.violations
            ],
            "dead_letters": [_dead_letter_view(note) for note in trace.dead_letters],
        }
    )
    return detail


class TraceApi:
    """Answers the viewer's API questions about one tracker; safe to call from many threads.

    ``keys``, an index fed the same records as the tracker, adds search by business key
    (see the module docstring).
    """

    def __init__(self, tracker: TrackerReader, keys: KeyIndex | None = None) -> None:
        """Serve views of ``tracker`` (searching business keys in ``keys`` when given)."""
        self.tracker = tracker
        self.keys = keys
        self._graph_lock = threading.Lock()
        self._graph: tuple[int, dict[str, Any]] | None = None

    def summary(self) -> dict[str, Any]:
        """Return counts per status (all statuses, zeros too), total, saga types and version."""
        version = self.tracker.version
        counts = self.tracker.counts()
        return {
            "version": version,
            "total": self.tracker.total(),
            "counts": {status.value: counts.get(status, 0) for status in SagaStatus},
            "saga_types": self.tracker.saga_types(),
            "records": records_view(self.tracker.stats),
            "viewer_version": __version__,
        }

    def sagas(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Return a page of sagas, newest first, filtered by ``status``, ``saga``, ``q`` and
        start time (``since``, ``until``: epoch ms, ISO 8601, or a duration ago like ``1h``).

        ``total`` is the number of matching sagas when the tracker can say it cheaply
        (every filter but a search), else None; ``has_more`` is always exact. A search
        by business key (see the module docstring) adds ``matched_fields`` to each row
        found by key. Raises :class:`BadQueryError` for an invalid parameter.
        """
        status_text = query.get("status", "").strip()
        search = query.get("q", "").strip() or None
        if search is not None and len(search) > MAX_QUERY_CHARS:
            raise BadQueryError(f"q must be at most {MAX_QUERY_CHARS} characters")
        wanted = SagaQuery(
            status=parse_status(status_text) if status_text else None,
            saga=query.get("saga", "").strip() or None,
            since_ms=_time_param(query, "since"),
            until_ms=_time_param(query, "until"),
            search=search,
        )
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(query, "offset", 0, 0, 10**9)
        version = self.tracker.version
        if search is not None and self.keys is not None:
            try:
                found = key_search(
                    self.tracker,
                    self.keys,
                    wanted,
                    search,
                    limit=limit,
                    offset=offset,
                    row=saga_row,
                )
            except ValueError as exc:
                raise BadQueryError(f"q: {exc}") from None
            return {"version": version, **found}
        page = self.tracker.find(wanted, limit=limit + 1, offset=offset)
        return {
            "version": version,
            "items": [saga_row(trace) for trace in page[:limit]],
            "limit": limit,
            "offset": offset,
            "has_more": len(page) > limit,
            "total": self.tracker.count(wanted),
        }

    def saga(self, correlation_id: str) -> dict[str, Any] | None:
        """Return one saga's trace (see :func:`saga_detail`), or None when it is unknown."""
        trace = self.tracker.get(correlation_id)
        return None if trace is None else saga_detail(trace)

    def payload(self, correlation_id: str, event_id: str) -> dict[str, Any] | None:
        """Return ``{"event_id", "payload"}`` for one event, or None when no payload is kept."""
        trace = self.tracker.get(correlation_id)
        if trace is None or not any(e.event_id == event_id for e in trace.events):
            return None
        payload = self.tracker.payload(correlation_id, event_id)
        if payload is None:
            return None
        return {"correlation_id": correlation_id, "event_id": event_id, "payload": payload}

    def graph(self) -> dict[str, Any]:
        """Return the choreography graph as nodes and edges (declared if known, else observed).

        The observed graph is drawn from the newest :data:`GRAPH_SAMPLE_SAGAS` sagas and
        recomputed only when the tracker's version has moved.
        """
        declared = declared_graph(self.tracker.choreography)
        if declared is not None:
            return declared
        version = self.tracker.version
        with self._graph_lock:
            if self._graph is not None and self._graph[0] == version:
                return self._graph[1]
        graph = observed_graph(self.tracker.find(limit=GRAPH_SAMPLE_SAGAS))
        with self._graph_lock:
            self._graph = (version, graph)
        return graph
