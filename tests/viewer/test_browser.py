"""The viewer in a real headless Chromium: counts, filters, search, timeline, live, escaping.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``$CHOREO_CHROMIUM``) and the
``playwright`` package; Playwright's own browser download is never used. Without them the
tests are skipped with the reason, except under CI (``$CI`` set), where they fail.
Screenshots are written to ``tests/artifacts/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from choreo.model.envelope import Role
from choreo.tracker.tracker import Tracker
from choreo.viewer import ViewerServer

from .conftest import Watched
from .samples import XSS, SagaWriter, Sample

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def row_ids(page: Any) -> list[str]:
    """Return the correlation ids of the saga rows shown, top to bottom."""
    ids: list[str] = page.eval_on_selector_all(
        "#saga-rows tr[data-cid]", "rows => rows.map(r => r.dataset.cid)"
    )
    return ids


def wait_rows(page: Any, expected: list[str]) -> None:
    """Wait until exactly ``expected`` rows are shown, in that order."""
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#saga-rows tr[data-cid]')]"
        ".map(r => r.dataset.cid)) === JSON.stringify(ids)",
        arg=expected,
    )


def count_of(page: Any, status: str) -> str:
    """Return the number shown on the count chip of ``status`` (``all`` for the total)."""
    text: str = page.inner_text(f'#counts .count[data-status="{status}"] .n')
    return text


def test_list_shows_counts_and_filters_and_searches(
    watched: Watched, server: ViewerServer, sample: Sample
) -> None:
    """The list shows counts per state, filters by state and saga type, and finds an id."""
    page = watched.page
    page.goto(server.url)
    wait_rows(page, [sample.refund, sample.pending, sample.compensated, sample.completed])
    assert count_of(page, "all") == "4"
    assert count_of(page, "Completed") == "2"
    assert count_of(page, "Failed") == "1"
    assert count_of(page, "Pending") == "1"
    assert page.inner_text("#page-info") == "1\N{EN DASH}4 of 4"

    page.click('#counts .count[data-status="Failed"]')
    wait_rows(page, [sample.compensated])
    assert page.get_attribute('#counts .count[data-status="Failed"]', "aria-pressed") == "true"

    page.select_option("#f-status", "Completed")
    wait_rows(page, [sample.refund, sample.completed])
    page.select_option("#f-saga", "OrderFulfillment")
    wait_rows(page, [sample.completed])
    page.select_option("#f-status", "")
    page.select_option("#f-saga", "")
    wait_rows(page, [sample.refund, sample.pending, sample.compensated, sample.completed])

    page.fill("#f-q", sample.pending[-7:])
    wait_rows(page, [sample.pending])
    assert "q=" in page.evaluate("location.hash")
    page.fill("#f-q", "no-such-saga")
    page.wait_for_selector("#saga-rows td.empty")
    assert watched.problems == []


def test_saga_timeline_marks_the_compensation_and_escapes_payloads(
    watched: Watched, server: ViewerServer, sample: Sample
) -> None:
    """A saga's timeline has a lane per service, marks failure and compensation, shows text."""
    page = watched.page
    page.goto(server.url)
    page.click(f'#saga-rows tr[data-cid="{sample.compensated}"] td.cid a')
    page.wait_for_selector("#timeline .tl-event")
    assert page.inner_text("#saga-cid") == sample.compensated
    assert page.inner_text("#saga-head .badge") == "Failed"
    lanes = page.eval_on_selector_all("#timeline .lane-label", "ls => ls.map(l => l.textContent)")
    assert lanes == ["order", "inventory", "payment"]
    roles = page.eval_on_selector_all("#timeline .tl-event", "gs => gs.map(g => g.dataset.role)")
    assert roles == ["start", "step", "failure", "compensation", "failed"]
    assert page.locator("#timeline .tl-event.role-compensation").count() == 1
    assert page.text_content("#timeline .comp-band-label") == "COMPENSATING"
    assert page.locator("#timeline path.cause").count() == 4
    assert page.inner_text('#event-rows tr[data-role="compensation"] .role') == "compensation"

    page.click("#timeline .tl-event.role-failure")
    page.wait_for_function(
        "text => document.getElementById('payload').textContent.includes(text)", arg=XSS
    )
    assert XSS in page.inner_text("#payload")
    assert page.locator("#payload-panel script").count() == 0
    assert page.evaluate("document.scripts.length") == 1
    assert watched.dialogs == []

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-saga.png"), full_page=True)
    assert (ARTIFACTS / "viewer-saga.png").stat().st_size > 10_000
    assert watched.problems == []


def test_live_updates_arrive_without_reload(
    watched: Watched, tracker: Tracker, server: ViewerServer, sample: Sample
) -> None:
    """Events fed into the tracker appear on the open page through SSE, without a reload."""
    page = watched.page
    page.goto(server.url)
    wait_rows(page, [sample.refund, sample.pending, sample.compensated, sample.completed])
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.__loadedOnce = true")

    fresh = SagaWriter("ord-live-0001", start_ms=1_700_000_009_000)
    fresh.emit("shop.orders.OrderCreated", Role.START, "order", step="order.place")
    tracker.feed_many(fresh.records)
    wait_rows(
        page,
        [fresh.correlation_id, sample.refund, sample.pending, sample.compensated, sample.completed],
    )
    page.wait_for_function(
        "() => document.querySelector('#counts .count[data-status=\"all\"] .n').textContent === '5'"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-list.png"), full_page=True)

    page.click(f'#saga-rows tr[data-cid="{sample.pending}"] td.cid a')
    page.wait_for_selector("#event-rows tr:nth-child(2)")
    assert page.inner_text("#saga-head .badge") == "Pending"
    writer = sample.pending_writer
    writer.emit("shop.payment.PaymentCharged", Role.STEP, "payment", step="payment.charge")
    writer.emit("shop.orders.OrderCompleted", Role.COMPLETED, "order")
    tracker.feed_many(writer.records[-2:])
    page.wait_for_selector("#event-rows tr:nth-child(4)")
    page.wait_for_function(
        "() => document.querySelector('#saga-head .badge').textContent === 'Completed'"
    )
    lanes = page.eval_on_selector_all("#timeline .lane-label", "ls => ls.map(l => l.textContent)")
    assert lanes == ["order", "inventory", "payment"]
    assert page.evaluate("window.__loadedOnce") is True
    assert watched.problems == []


def test_graph_is_drawn_from_the_observed_events(
    watched: Watched, server: ViewerServer, sample: Sample
) -> None:
    """The choreography view draws event and service nodes with edges between them."""
    page = watched.page
    page.goto(server.url + "#/graph")
    page.wait_for_selector("#graph .g-event")
    labels = page.eval_on_selector_all("#graph .g-event text", "ts => ts.map(t => t.textContent)")
    assert {"OrderCreated", "PaymentDeclined", "InventoryReleased"} <= set(labels)
    assert page.locator("#graph .g-service").count() >= 5
    assert page.locator("#graph path.g-edge.lane-compensation").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "viewer-graph.png"), full_page=True)
    assert watched.problems == []


def test_search_by_business_key_in_the_page(watched: Watched) -> None:
    """The search box finds sagas by field=value and by a value in any field, shows which
    field matched, and shows a hostile value as text."""
    import json

    from choreo.tracker.keys import KeyIndex

    from .samples import new_tracker
    from .test_search import keyed_sagas

    tracker = new_tracker()
    keys = KeyIndex(decode=json.loads)
    ids = keyed_sagas(tracker, keys)
    with ViewerServer(tracker, keys=keys) as viewer:
        page = watched.page
        page.goto(viewer.url)
        wait_rows(page, list(reversed(ids)))
        page.fill("#f-q", "order_id=A-3")
        wait_rows(page, [ids[3]])
        assert page.inner_text(f'#saga-rows tr[data-cid="{ids[3]}"] .matched') == (
            "matched order_id"
        )
        page.fill("#f-q", "alice@EXAMPLE.com")
        wait_rows(page, [ids[4], ids[2], ids[0]])
        assert "customer.email" in page.inner_text(f'#saga-rows tr[data-cid="{ids[0]}"] .matched')
        page.fill("#f-q", f"note={XSS}")
        wait_rows(page, list(reversed(ids)))
        assert page.locator("#saga-rows script").count() == 0
        page.select_option("#f-status", "Failed")
        wait_rows(page, [ids[3]])
        page.fill("#f-q", "order_id=nothing-like-this")
        page.wait_for_selector("#saga-rows td.empty")
        assert watched.dialogs == []
        assert watched.problems == []


def test_started_filter_keeps_recent_sagas(
    watched: Watched, tracker: Tracker, server: ViewerServer, sample: Sample
) -> None:
    """'Last hour' lists only the sagas started within the hour; the choice is in the URL."""
    import time

    recent = SagaWriter("ord-recent-0001", start_ms=int(time.time() * 1000) - 60_000)
    recent.emit("shop.orders.OrderCreated", Role.START, "order", step="order.place")
    tracker.feed_many(recent.records)
    page = watched.page
    page.goto(server.url)
    wait_rows(page, [recent.correlation_id, sample.refund, sample.pending, sample.compensated,
                     sample.completed])
    page.select_option("#f-since", "1h")
    wait_rows(page, [recent.correlation_id])
    assert "since=1h" in page.evaluate("location.hash")
    page.select_option("#f-since", "")
    wait_rows(page, [recent.correlation_id, sample.refund, sample.pending, sample.compensated,
                     sample.completed])
    assert watched.problems == []
