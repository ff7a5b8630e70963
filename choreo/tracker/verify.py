"""Check the saga guarantee over a whole log: every violation, explained, or a clean bill.

``choreo verify`` is this module over a file or a cluster: fold every record with a
:class:`~choreo.tracker.tracker.Tracker`, then list each saga's violations (saga,
correlation id, code, message). Stuck and compensation-failed sagas are reported too, but
only violations make the log fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from choreo.tracker.model import SagaStatus, Violation
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record

__all__ = ["Finding", "VerifyReport", "verify_records", "verify_tracker"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One violation of one saga."""

    correlation_id: str
    saga: str
    violation: Violation

    def __str__(self) -> str:
        return (
            f"{self.saga or '?'} {self.correlation_id}: "
            f"[{self.violation.code}] {self.violation.message}"
        )


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify_tracker` found: violations, and sagas needing attention."""

    sagas: int
    events: int
    findings: list[Finding] = field(default_factory=list)
    compensation_failed: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no saga breaks the saga guarantee."""
        return not self.findings

    @property
    def violated_sagas(self) -> int:
        """Return how many sagas have at least one violation."""
        return len({finding.correlation_id for finding in self.findings})

    def summary(self) -> str:
        """Return the one-line verdict."""
        if self.ok:
            return f"no violation in {self.sagas} sagas ({self.events} events)"
        return (
            f"{len(self.findings)} violation(s) in {self.violated_sagas} of {self.sagas} "
            f"sagas ({self.events} events)"
        )


def verify_tracker(tracker: Tracker) -> VerifyReport:
    """Return the report of every saga the tracker holds (in correlation-id order)."""
    total = tracker.total()
    report = VerifyReport(sagas=total, events=tracker.stats.events)
    for trace in sorted(
        tracker.sagas(status=SagaStatus.VIOLATED, limit=total),
        key=lambda t: t.correlation_id,
    ):
        report.findings.extend(
            Finding(trace.correlation_id, trace.saga, violation) for violation in trace.violations
        )
    for status, bucket in (
        (SagaStatus.COMPENSATION_FAILED, report.compensation_failed),
        (SagaStatus.STUCK, report.stuck),
    ):
        bucket.extend(sorted(t.correlation_id for t in tracker.sagas(status=status, limit=total)))
    return report


def verify_records(records: Iterable[Record], *, tracker: Tracker | None = None) -> VerifyReport:
    """Fold ``records`` (into ``tracker``, or a new one) and return the report."""
    tracker = tracker if tracker is not None else Tracker()
    tracker.feed_many(records)
    return verify_tracker(tracker)
