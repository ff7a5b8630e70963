"""Fixtures for the viewer tests: a real Tracker fed with the sample sagas, a running server,
and a headless Chromium (Debian's ``chromium``, or ``$CHOREO_CHROMIUM``) for the browser tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from choreo.tracker.tracker import Tracker
from choreo.viewer import ViewerServer

from .samples import Sample, feed_sample, new_tracker


@pytest.fixture
def tracker() -> Tracker:
    """Return an empty tracker that decodes JSON payloads."""
    return new_tracker()


@pytest.fixture
def sample(tracker: Tracker) -> Sample:
    """Feed the sample sagas into ``tracker`` and describe them."""
    return feed_sample(tracker)


@pytest.fixture
def server(tracker: Tracker, sample: Sample) -> Iterator[ViewerServer]:
    """Serve ``tracker`` (with the sample fed) on a free loopback port."""
    viewer = ViewerServer(tracker, port=0).start()
    try:
        yield viewer
    finally:
        viewer.stop()


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


def chromium_path() -> str:
    """Return the Chromium executable to drive: ``$CHOREO_CHROMIUM`` or Debian's."""
    return os.environ.get("CHOREO_CHROMIUM", "/usr/bin/chromium")


def _no_browser(reason: str) -> None:
    """Fail under CI, skip elsewhere: the browser tests cannot run."""
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    """Yield a Playwright browser context of the system Chromium with a new empty profile."""
    executable = chromium_path()
    if not (Path(executable).is_file() and os.access(executable, os.X_OK)):
        _no_browser(f"no Chromium at {executable} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install playwright)")
    profile = tempfile.mkdtemp(prefix="choreo-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 900},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Watched:
    """A page plus the console errors, page errors and dialogs seen on it."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.page.set_default_timeout(30_000)  # a loaded machine renders late, not never
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        """Close the page."""
        self.page.close()


@pytest.fixture
def watched(browser_context: Any) -> Iterator[Watched]:
    """Yield a fresh page whose console errors and dialogs are recorded."""
    page = Watched(browser_context)
    try:
        yield page
    finally:
        page.close()
