"""The broker-cost benchmark's pure parts: keys per partition, the summary and its table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_broker_cost import _keys_for, summarize, table  # noqa: E402
from choreo.transports.partitioner import partition_for  # noqa: E402


def _row(variant: str, broker: float, requests: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {
        "variant": variant, "broker_ms_per_saga": broker, "service_ms_per_saga": 1.0,
        "p50_ms": 5.0, "p99_ms": 30.0, "requests_per_saga": requests,
        "requests_per_saga_total": sum(requests.values()), "ok": True,
        "records_per_fetch": extra.get("per_fetch"),
        "records_per_produce": extra.get("per_produce"),
    }


def test_the_probe_keys_land_one_in_each_partition() -> None:
    """The produce probe's keys cover partitions 0..n-1 once each under Kafka's partitioner."""
    keys = _keys_for(6)
    assert [partition_for(key, 6) for key in keys] == list(range(6))


def test_the_summary_gives_request_medians_and_none_where_nothing_was_counted() -> None:
    """Fetch/Produce per saga and records per request are medians over the repeats; a
    variant whose clients report no counts (kafka-python) shows n/a, not zero."""
    rows = [
        _row("before", 6.0, {"Fetch": 4.8, "Produce": 4.9}, per_fetch=1.0, per_produce=1.0),
        _row("before", 5.0, {"Fetch": 5.0, "Produce": 4.7}, per_fetch=1.1, per_produce=1.0),
        _row("before", 7.0, {"Fetch": 4.9, "Produce": 4.8}, per_fetch=1.2, per_produce=1.0),
        _row("kafka-python", 3.0, {}),
    ]
    summary = {e["variant"]: e for e in summarize(rows)}
    assert summary["before"]["counts"] == {
        "fetch_per_saga": 4.9, "produce_per_saga": 4.8,
        "records_per_fetch": 1.1, "records_per_produce": 1.0,
    }
    assert summary["kafka-python"]["counts"]["fetch_per_saga"] is None
    assert summary["kafka-python"]["ratio"]["broker_ms_per_saga"] == 0.5
    lines = table(list(summary.values())).splitlines()
    assert lines[2].startswith("| before | 6.000 (5.000-7.000) | 1.00 |")
    assert lines[3].count("| n/a ") == 5
