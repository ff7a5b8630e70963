"""Time to first render of the web viewer's saga list over 100,000 sagas, in a real browser.

Feeds N sagas (default 100,000: 80 % completed, 10 % failed after a compensation, 10 %
still pending) into a :class:`~choreo.tracker.tracker.Tracker`, serves it with
:class:`~choreo.viewer.ViewerServer`, then loads the page in headless Chromium (Debian's
``/usr/bin/chromium`` driven by Playwright) and reads the ``choreo:first-rows``
performance mark the page sets when its first rows are in the DOM: milliseconds from
navigation start to the first rows rendered. Also reports the feed rate and the latency
of the JSON endpoints the page calls (list pages come from the tracker's saga index, so
they should not depend on the number of sagas).

    python bench/bench_viewer.py [--sagas 100000] [--runs 7] [--json results.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from choreo.model.envelope import Header
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record
from choreo.viewer import ViewerServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_MS = 1_700_000_000_000

FLOWS: dict[str, list[tuple[str, str, str]]] = {
    "completed": [
        ("shop.orders.OrderCreated", "start", "order"),
        ("shop.inventory.InventoryReserved", "step", "inventory"),
        ("shop.payment.PaymentCharged", "step", "payment"),
        ("shop.orders.OrderCompleted", "completed", "order"),
    ],
    "failed": [
        ("shop.orders.OrderCreated", "start", "order"),
        ("shop.inventory.InventoryReserved", "step", "inventory"),
        ("shop.payment.PaymentDeclined", "failure", "payment"),
        ("shop.inventory.InventoryReleased", "compensation", "inventory"),
        ("shop.orders.OrderFailed", "failed", "order"),
    ],
    "pending": [
        ("shop.orders.OrderCreated", "start", "order"),
        ("shop.inventory.InventoryReserved", "step", "inventory"),
    ],
}
STEPS = {"order": "order.place", "inventory": "inventory.reserve", "payment": "payment.charge"}


def records(sagas: int) -> Iterator[Record]:
    """Yield the records of ``sagas`` sagas, one saga after another, with choreo headers."""
    offset = 0
    for i in range(sagas):
        kind = "failed" if i % 10 == 3 else "pending" if i % 10 == 7 else "completed"
        cid = f"ord-{i:06d}-{uuid.uuid4().hex[:8]}".encode()
        at = START_MS + i * 50
        cause: bytes | None = None
        for n, (event_type, role, service) in enumerate(FLOWS[kind]):
            event_id = uuid.uuid4().hex.encode()
            headers = [
                (Header.EVENT_TYPE, event_type.encode()),
                (Header.EVENT_ID, event_id),
                (Header.CORRELATION_ID, cid),
                (Header.SAGA, b"OrderFulfillment"),
                (Header.ROLE, role.encode()),
                (Header.SERVICE, service.encode()),
                (Header.PRODUCED_AT, str(at + 7 * n).encode()),
                (Header.STEP, STEPS[service].encode()),
            ]
            if cause is not None:
                headers.append((Header.CAUSATION_ID, cause))
            cause = event_id
            yield Record("shop.events", i % 6, offset, cid, b"{}", tuple(headers), at)
            offset += 1


def timed(call: Callable[[], Any], runs: int) -> list[float]:
    """Return the wall-clock milliseconds of ``runs`` calls of ``call``."""
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def get(url: str) -> bytes:
    """Return the body of a GET of ``url``."""
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
    return body


def summary(values: list[float]) -> dict[str, float]:
    """Return median, min and max of ``values``, rounded to 0.1."""
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def browser_first_rows(url: str, runs: int) -> list[dict[str, float]]:
    """Load the page ``runs`` times (new page each time); return the page's timings in ms."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="choreo-bench-chromium-")
    results = []
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 900},
            )
            try:
                for _ in range(runs):
                    page = context.new_page()
                    page.goto(url, wait_until="commit")
                    page.wait_for_selector("html[data-first-rows]", timeout=60_000)
                    timings = page.evaluate(
                        """() => ({
                          first_rows:
                              performance.getEntriesByName('choreo:first-rows')[0].startTime,
                          dom_content_loaded: performance.getEntriesByType('navigation')[0]
                              .domContentLoadedEventEnd,
                          rows: document.querySelectorAll('#saga-rows tr[data-cid]').length,
                        })"""
                    )
                    results.append(timings)
                    page.close()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return results


def main() -> None:
    """Run the benchmark and print (and optionally save) its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    tracker = Tracker(default_deadline_s=10**9)
    started = time.perf_counter()
    fed = tracker.feed_many(records(args.sagas))
    feed_s = time.perf_counter() - started
    print(
        f"fed {fed:,} records ({tracker.total():,} sagas) in {feed_s:.1f} s "
        f"= {fed / feed_s:,.0f} records/s"
    )

    results: dict[str, Any] = {
        "sagas": tracker.total(),
        "records": fed,
        "feed_records_per_s": round(fed / feed_s),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    with ViewerServer(tracker) as server:
        base = server.url
        endpoints = {
            "summary": base + "api/summary",
            "sagas_page": base + "api/sagas?limit=50",
            "sagas_failed": base + "api/sagas?status=Failed&limit=50",
            "sagas_type_pending": base + "api/sagas?saga=OrderFulfillment&status=Pending&limit=50",
            "sagas_deep_page": base + "api/sagas?limit=50&offset=20000",
            "sagas_search": base + "api/sagas?q=ord-0999&limit=50",
            "saga_detail": base
            + "api/sagas/"
            + tracker.sagas(limit=1, offset=500)[0].correlation_id,
        }
        api = {}
        for name, url in endpoints.items():
            get(url)
            api[name] = summary(timed(functools.partial(get, url), 15))
            print(
                f"GET {name:<18} median {api[name]['median']:7.1f} ms  "
                f"(min {api[name]['min']:.1f}, max {api[name]['max']:.1f})"
            )
        results["api_ms"] = api

        loads = browser_first_rows(base, args.runs)
        first = [load["first_rows"] for load in loads]
        dcl = [load["dom_content_loaded"] for load in loads]
        results["browser"] = {
            "runs": len(loads),
            "rows_rendered": loads[0]["rows"],
            "first_rows_ms": summary(first),
            "dom_content_loaded_ms": summary(dcl),
        }
        print(
            f"browser: {loads[0]['rows']} rows rendered; first rows at median "
            f"{statistics.median(first):.0f} ms after navigation start "
            f"(min {min(first):.0f}, max {max(first):.0f}; {len(loads)} loads; "
            f"DOMContentLoaded median {statistics.median(dcl):.0f} ms)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
