"""The tracker package's public names are pinned."""

from __future__ import annotations

import choreo.tracker


def test_public_names() -> None:
    """choreo.tracker exports exactly these names, each importable."""
    assert sorted(choreo.tracker.__all__) == sorted(
        [
            "TIMEOUT_EVENT_TYPE", "CheckpointStore", "Code", "Finding", "GraphFacts",
            "LiveTracker", "SagaQuery", "SagaState", "SagaStatus", "SagaTrace", "TimeoutService",
            "TraceEvent", "Tracker", "TrackerGroupMember", "TrackerStats", "VerifyReport",
            "Violation",
            "causal_order", "facts_from", "fold", "read_container_file", "read_topics",
            "verify_records", "verify_tracker", "write_container_file",
        ]
    )
    for name in choreo.tracker.__all__:
        assert getattr(choreo.tracker, name) is not None
