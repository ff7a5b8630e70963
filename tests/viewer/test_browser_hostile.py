"""Hostile data and a crowded server in a real headless Chromium.

Correlation ids a URL path would mangle open from the list; bidirectional overrides in
data are isolated (``<bdi>``); times outside the calendar read "invalid time"; the
dead letters of a saga are listed with their reason; and the page reconnects its live
stream with backoff after the server refused it (503).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from choreo.model.envelope import Header, Role
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record
from choreo.viewer.web import Limits, ViewerServer

from .conftest import Watched
from .samples import SagaWriter, new_tracker

pytestmark = pytest.mark.browser

RLO = "\u202e"
ODD = ["../..", "a/b c%20d", f"{RLO}evil.exe"]


@pytest.fixture
def hostile_tracker() -> Tracker:
    """Sagas with odd ids, a bidi override in a service name, a time past year 9999 and a
    dead letter."""
    tracker = new_tracker()
    for cid in ODD:
        writer = SagaWriter(cid)
        writer.emit("shop.orders.OrderPlaced", Role.START, f"svc{RLO}gpj.exe")
        tracker.feed_many(writer.records)
    far = SagaWriter("far-future", start_ms=400_000_000_000_000)
    far.emit("shop.orders.OrderPlaced", Role.START, "order")
    tracker.feed_many(far.records)
    last = far.last
    assert last is not None
    letter = [
        *last.to_headers(),
        (Header.DLQ_REASON, b"undecodable: <b>bad</b> bytes"),
        (Header.DLQ_SERVICE, b"inventory"),
        (Header.DLQ_FAILED_AT, b"1700000000000"),
    ]
    tracker.feed(Record("choreo.deadletter.inventory", 0, 0, b"far-future", b"x", tuple(letter)))
    return tracker


@pytest.fixture
def small_server(hostile_tracker: Tracker) -> Iterator[ViewerServer]:
    """Serve the hostile tracker with one live-stream slot."""
    viewer = ViewerServer(
        hostile_tracker, port=0, limits=Limits(max_streams=1, request_timeout=5.0)
    ).start()
    try:
        yield viewer
    finally:
        viewer.stop()


@pytest.mark.parametrize("cid", ODD)
def test_odd_ids_open_from_the_list(
    watched: Watched, small_server: ViewerServer, cid: str
) -> None:
    """A saga whose id holds '..', '/', '%', spaces or a bidi override opens and shows its id."""
    page = watched.page
    page.goto(small_server.url)
    page.wait_for_selector("#saga-rows tr[data-cid]")
    page.evaluate(
        "cid => [...document.querySelectorAll('#saga-rows tr[data-cid]')]"
        ".find(r => r.dataset.cid === cid).querySelector('td.cid a').click()",
        cid,
    )
    page.wait_for_selector("#saga-cid")
    page.wait_for_function(
        "cid => document.getElementById('saga-cid').textContent === cid", arg=cid
    )
    isolated = page.eval_on_selector_all(
        "#event-rows bdi", "els => els.map(e => getComputedStyle(e).unicodeBidi)"
    )
    assert isolated and all(value == "isolate" for value in isolated)
    assert watched.problems == []


def test_invalid_times_and_dead_letters_are_shown(
    watched: Watched, small_server: ViewerServer
) -> None:
    """A time past 9999 reads 'invalid time'; the dead letter is listed with its reason."""
    page = watched.page
    page.goto(small_server.url + "#/saga/far-future")
    page.wait_for_selector(".dead-letters li")
    assert "undecodable" in page.inner_text(".dead-letters li")
    assert "<b>bad</b>" in page.inner_text(".dead-letters li")  # shown as text
    assert page.locator(".dead-letters b").count() == 0
    assert "Started invalid time (400000000000000 ms)" in page.inner_text("#saga-head")
    assert "invalid time" in (page.text_content("#timeline") or "")
    assert watched.problems == []


def test_the_page_reconnects_after_a_503(
    watched: Watched, small_server: ViewerServer, hostile_tracker: Tracker
) -> None:
    """With the only stream slot taken the page's stream gets 503 and retries with backoff;
    once the slot frees it goes live and receives changes."""
    hog = socket.create_connection((small_server.host, small_server.port))
    hog.sendall(
        f"GET /api/stream HTTP/1.1\r\nHost: {small_server.host}:{small_server.port}\r\n\r\n"
        .encode()
    )
    assert hog.recv(4096).startswith(b"HTTP/1.1 200")
    page = watched.page
    page.on("console", lambda _m: None)
    page.goto(small_server.url)
    page.wait_for_selector('#live[data-state="down"][data-retry-ms]')
    first_wait = int(page.get_attribute("#live", "data-retry-ms") or "0")
    assert 500 <= first_wait <= 1500
    hog.close()
    page.wait_for_selector('#live[data-state="live"]', timeout=45_000)  # backoff after load
    writer = SagaWriter("after-reconnect", start_ms=1_700_000_100_000)
    writer.emit("shop.orders.OrderPlaced", Role.START, "order")
    hostile_tracker.feed_many(writer.records)
    page.wait_for_selector('#saga-rows tr[data-cid="after-reconnect"]', timeout=30_000)
    # the refused stream is reported by the browser as a failed resource; nothing else
    unexpected = [p for p in watched.problems if "503" not in p and "stream" not in p]
    assert unexpected == []
