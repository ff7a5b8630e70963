"""The viewer's search: by correlation id, and by business key when an index is attached."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import replace

import pytest

from choreo.model.envelope import Role
from choreo.tracker.keys import KeyIndex
from choreo.tracker.tracker import Tracker
from choreo.viewer import ViewerServer
from choreo.viewer.api import BadQueryError, TraceApi

from .samples import XSS, SagaWriter, new_tracker


def keyed_sagas(tracker: Tracker, keys: KeyIndex, count: int = 6) -> list[str]:
    """Feed ``count`` orders (order_id A-<i>, two customers, the previous saga's id, a tenant
    header); return their ids.

    Saga i starts i seconds after the first, so the newest is the last.
    """
    ids = []
    for i in range(count):
        writer = SagaWriter(f"saga-{i:02d}", start_ms=1_700_000_000_000 + i * 1_000)
        email = "Alice@Example.com" if i % 2 == 0 else "bob@example.com"
        writer.emit(
            "shop.orders.OrderCreated",
            Role.START,
            "order",
            payload={
                "order_id": f"A-{i}",
                "customer": {"email": email, "note": XSS},
                "previous": ids[-1] if ids else "none",
            },
        )
        writer.emit("shop.orders.OrderCompleted" if i != 3 else "shop.orders.OrderFailed",
                    Role.COMPLETED if i != 3 else Role.FAILED, "order")
        records = [replace(writer.records[0], headers=(*writer.records[0].headers,
                                                        ("x-tenant", b"acme"))),
                   *writer.records[1:]]
        tracker.feed_many(keys.tee(records))
        ids.append(writer.correlation_id)
    return ids


@pytest.fixture
def keyed() -> tuple[TraceApi, list[str]]:
    """Return an API over a tracker with a business-key index, and the saga ids fed."""
    tracker = new_tracker()
    keys = KeyIndex(decode=json.loads)
    ids = keyed_sagas(tracker, keys)
    return TraceApi(tracker, keys), ids


def ids_of(answer: dict[str, object]) -> list[str]:
    """Return the correlation ids of a page, in order."""
    return [row["correlation_id"] for row in answer["items"]]  # type: ignore[attr-defined,index]


def test_field_equals_value_finds_the_saga_and_names_the_field(
    keyed: tuple[TraceApi, list[str]],
) -> None:
    """order_id=A-2 finds one saga, whose row says which field matched."""
    api, ids = keyed
    answer = api.sagas({"q": "order_id=a-2"})
    assert ids_of(answer) == [ids[2]]
    assert answer["items"][0]["matched_fields"] == ["order_id"]  # type: ignore[index]
    assert answer["total"] is None and answer["key_search"] is True
    assert ids_of(api.sagas({"q": "email=alice@example.com"})) == [ids[4], ids[2], ids[0]]
    assert ids_of(api.sagas({"q": "x-tenant=ACME", "limit": "2"})) == [ids[5], ids[4]]


def test_plain_text_finds_values_and_correlation_ids_together(
    keyed: tuple[TraceApi, list[str]],
) -> None:
    """Any text finds sagas holding it as a value and ids containing it, newest first."""
    api, ids = keyed
    assert ids_of(api.sagas({"q": "bob@example.com"})) == [ids[5], ids[3], ids[1]]
    assert ids_of(api.sagas({"q": "saga-0"})) == list(reversed(ids))  # id substring
    assert ids_of(api.sagas({"q": "SAGA-02"})) == [ids[3], ids[2]]  # a value, and an id
    assert ids_of(api.sagas({"q": XSS})) == list(reversed(ids))  # a value, found as text


def test_key_search_pages_exactly_and_keeps_the_status_filter(
    keyed: tuple[TraceApi, list[str]],
) -> None:
    """Pages of a key search neither repeat nor skip a saga; status and saga filters apply."""
    api, ids = keyed
    pages = []
    for offset in range(0, 6, 2):
        page = api.sagas({"q": "x-tenant=acme", "limit": "2", "offset": str(offset)})
        pages.extend(ids_of(page))
        assert page["has_more"] is (offset < 4)
    assert pages == list(reversed(ids))
    assert ids_of(api.sagas({"q": "bob@example.com", "status": "Failed"})) == [ids[3]]
    assert ids_of(api.sagas({"q": "x-tenant=acme", "saga": "Refund"})) == []


def test_malformed_field_condition_is_a_bad_query(keyed: tuple[TraceApi, list[str]]) -> None:
    """'=value' names no field: refused with what to write."""
    api, _ = keyed
    with pytest.raises(BadQueryError, match="FIELD=VALUE"):
        api.sagas({"q": "=A-1"})


def test_without_an_index_the_search_is_by_correlation_id_only() -> None:
    """A viewer without a key index finds ids containing the text, as before."""
    tracker = new_tracker()
    ids = keyed_sagas(tracker, KeyIndex(decode=json.loads), count=2)
    api = TraceApi(tracker)
    assert ids_of(api.sagas({"q": "alice@example.com"})) == []
    assert ids_of(api.sagas({"q": "saga-01"})) == [ids[1]]


def test_key_search_over_http_escapes_what_it_returns() -> None:
    """The served answer finds the saga by key; its JSON carries no raw markup."""
    tracker = new_tracker()
    keys = KeyIndex(decode=json.loads)
    ids = keyed_sagas(tracker, keys, count=3)
    with ViewerServer(tracker, keys=keys) as viewer:
        query = urllib.parse.urlencode({"q": "note=" + XSS})
        with urllib.request.urlopen(f"{viewer.url}api/sagas?{query}", timeout=10) as response:
            raw = response.read()
    assert b"<" not in raw and b">" not in raw
    answer = json.loads(raw)
    assert [row["correlation_id"] for row in answer["items"]] == list(reversed(ids))
    assert answer["items"][0]["matched_fields"] == ["customer.note"]


def test_time_window_applies_to_lists_and_key_searches(keyed: tuple[TraceApi, list[str]]) -> None:
    """since/until (epoch ms, ISO 8601) bound the start time, with or without a key search."""
    api, ids = keyed
    window = {"since": "1700000002000", "until": "2023-11-14T22:13:24Z"}
    assert ids_of(api.sagas(window)) == [ids[4], ids[3], ids[2]]
    assert ids_of(api.sagas({**window, "q": "x-tenant=acme"})) == [ids[4], ids[3], ids[2]]
    assert ids_of(api.sagas({"since": "1h"})) == []  # the sample sagas started in 2023
    with pytest.raises(BadQueryError, match="duration ago"):
        api.sagas({"since": "last tuesday"})
