"""Hostile-input tests: a count of the inputs tried, reported at the end of the run."""

from __future__ import annotations

from typing import Any

from .strategies import TRIED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report how many hostile inputs the fuzz tests of this run tried, per surface."""
    if not TRIED:
        return
    total = sum(TRIED.values())
    parts = ", ".join(f"{name} {count}" for name, count in sorted(TRIED.items()))
    terminalreporter.write_line(f"hostile inputs tried: {total} ({parts})")
