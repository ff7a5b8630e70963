"""Avro tests: the count of fuzzed inputs, reported at the end of the run."""

from __future__ import annotations

from typing import Any

from avro_fuzz_count import AVRO_FUZZ_TRIED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report how many hostile inputs the Avro fuzz targets tried, per target."""
    if not AVRO_FUZZ_TRIED:
        return
    total = sum(AVRO_FUZZ_TRIED.values())
    parts = ", ".join(f"{name} {count}" for name, count in sorted(AVRO_FUZZ_TRIED.items()))
    terminalreporter.write_line(f"avro hostile inputs tried: {total} ({parts})")
