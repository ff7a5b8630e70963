"""The viewer's search by business key: a page of sagas found by a payload field or header.

:func:`key_search` answers ``/api/sagas?q=…`` when the viewer has a
:class:`~choreo.tracker.keys.KeyIndex`: ``FIELD=VALUE`` finds the sagas with an event
whose field or header FIELD holds VALUE (``order_id=123``); any other text finds the
correlation ids containing it *and* the sagas holding it as a value in any field or
header (``alice@example.com``). Sagas are listed newest first, as the tracker lists
them, and the page is cut from the merge of both lists, so paging neither repeats nor
skips a saga. At most :data:`MAX_KEY_MATCHES` sagas found by key are listed
(``key_matches_cut`` says when more matched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from choreo.tracker.keys import KeyIndex, KeyQuery, parse_where
from choreo.tracker.model import SagaTrace
from choreo.tracker.query import SagaQuery

__all__ = ["MAX_KEY_MATCHES", "SagaSource", "key_search"]

MAX_KEY_MATCHES: Final = 5_000
"""The most sagas a business-key search lists (the newest of those looked at)."""
_LOOKED_AT: Final = MAX_KEY_MATCHES * 4
"""The most sagas found by key that are fetched to be sorted by start time."""


class SagaSource(Protocol):
    """What a key search reads of a tracker: a page of sagas, and one saga."""

    def find(
        self, query: SagaQuery | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[SagaTrace]:
        """Return a page of the sagas matching ``query``, newest first."""
        ...

    def get(self, correlation_id: str) -> SagaTrace | None:
        """Return one saga's trace, or None when the id is unknown."""
        ...


def _newest_first(trace: SagaTrace) -> tuple[int, str]:
    """Return the key that lists sagas as the tracker does: by start time, then id."""
    started = trace.started_at_ms
    return (-1 if started is None else started, trace.correlation_id)


def _admitted(trace: SagaTrace, wanted: SagaQuery) -> bool:
    """Return True when ``trace`` passes every filter of ``wanted`` but its id search."""
    if not wanted.admits(trace.status, trace.saga, trace.stuck):
        return False
    started = -1 if trace.started_at_ms is None else trace.started_at_ms
    return (wanted.since_ms is None or started >= wanted.since_ms) and (
        wanted.until_ms is None or started <= wanted.until_ms
    )


def _query_of(search: str) -> KeyQuery:
    """Return the key query of a search box's text; ``ValueError`` for a bad FIELD=VALUE."""
    if "=" in search:
        return KeyQuery(where=(parse_where(search),))
    return KeyQuery.of(find=search)


def key_search(
    tracker: SagaSource,
    keys: KeyIndex,
    wanted: SagaQuery,
    search: str,
    *,
    limit: int,
    offset: int,
    row: Callable[[SagaTrace], dict[str, Any]],
) -> dict[str, Any]:
    """Return a page of the sagas ``search`` finds by key (and by correlation id for text).

    ``wanted`` holds the other filters (status, saga type) and the text as its id search;
    ``row`` turns a saga into a row of the page, to which ``matched_fields`` is added for
    a saga found by key. Raises ``ValueError`` for a malformed ``FIELD=VALUE``.
    """
    query = _query_of(search)
    by_id = [] if query.where else tracker.find(wanted, limit=offset + limit + 1)
    found = sorted(keys.matching(query), reverse=True)
    by_key = [
        trace
        for trace in (tracker.get(cid) for cid in found[:_LOOKED_AT])
        if trace is not None and _admitted(trace, wanted)
    ]
    by_key.sort(key=_newest_first, reverse=True)
    cut = len(by_key) > MAX_KEY_MATCHES or len(found) > _LOOKED_AT
    by_key = by_key[:MAX_KEY_MATCHES]
    key_ids = {trace.correlation_id for trace in by_key}
    merged = {trace.correlation_id: trace for trace in [*by_id, *by_key]}
    page = sorted(merged.values(), key=_newest_first, reverse=True)[offset : offset + limit + 1]
    items = []
    for trace in page[:limit]:
        item = row(trace)
        if trace.correlation_id in key_ids:
            item["matched_fields"] = keys.fields_of(trace.correlation_id, query)
        items.append(item)
    return {
        "items": items,
        "limit": limit,
        "offset": offset,
        "has_more": len(page) > limit,
        "total": None,
        "key_search": True,
        "key_matches_cut": cut,
    }
