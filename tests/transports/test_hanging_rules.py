"""Which marker ends a hanging transaction: the decided one, else the one that loses nothing."""

from __future__ import annotations

import pytest

from choreo.transports.base import TopicPartition
from choreo.transports.hanging import CONSUMER_OFFSETS, Hanging, Outcome, decided_outcome


@pytest.mark.parametrize(
    ("state", "coordinator_producer", "coordinator_epoch", "expected"),
    [
        ("CompleteCommit", 7, 3, "commit"),
        ("CompleteAbort", 7, 3, "abort"),
        ("CompleteCommit", 7, 4, "unknown"),  # registered again, or a later transaction (v2)
        ("CompleteCommit", 8, 3, "unknown"),  # the id has another producer now
        ("Empty", 7, 3, "unknown"),
        ("Ongoing", 7, 3, "unknown"),
    ],
)
def test_the_decision_is_known_only_at_the_same_producer_and_epoch(
    state: str, coordinator_producer: int, coordinator_epoch: int, expected: str
) -> None:
    """The coordinator's state is the hanging transaction's decision only while nothing moved."""
    assert decided_outcome(7, 3, state, coordinator_producer, coordinator_epoch) == expected


def _hanging(topic: str, outcome: Outcome, transactional_id: str | None = "t\x1b[31m") -> Hanging:
    return Hanging(
        partition=TopicPartition(topic, 4),
        producer_id=7,
        producer_epoch=3,
        coordinator_epoch=0,
        start_offset=12,
        age=90.0,
        transactional_id=transactional_id,
        coordinator_state="CompleteCommit",
        outcome=outcome,
    )


def test_an_unknown_decision_commits_records_and_aborts_offsets() -> None:
    """Commit on data (never lose an output), abort on a group's offsets (never skip an input)."""
    assert _hanging("orders", "unknown").remedy == "commit"
    assert _hanging(CONSUMER_OFFSETS, "unknown").remedy == "abort"
    assert _hanging("orders", "abort").remedy == "abort"
    assert _hanging(CONSUMER_OFFSETS, "commit").remedy == "commit"


def test_the_description_names_everything_and_escapes_broker_text() -> None:
    """Topic and transactional id come from the broker: no control character reaches a terminal."""
    line = _hanging("orders\x07", "unknown").describe()
    assert "\x1b" not in line and "\x07" not in line
    assert "[4]" in line and "producer 7" in line and "offset 12" in line
    assert line.endswith("decided: unknown; remedy: commit")
    assert "an unknown id" in _hanging("orders", "unknown", None).describe()
