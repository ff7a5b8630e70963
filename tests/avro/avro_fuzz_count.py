"""The count of fuzzed inputs per Avro fuzz target in this test run (shared with conftest)."""

from __future__ import annotations

from collections import Counter

AVRO_FUZZ_TRIED: Counter[str] = Counter()
