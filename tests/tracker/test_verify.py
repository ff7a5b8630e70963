"""verify: a clean log passes, a log with injected violations is flagged, each explained."""

from __future__ import annotations

from tracker_log import SagaLog, to_records

from choreo.model.envelope import Role
from choreo.tracker.fold import Code
from choreo.tracker.verify import verify_records


def injected() -> tuple[list[SagaLog], dict[str, str]]:
    """Return clean sagas plus one per violation code, and the expected code per saga."""
    logs = [SagaLog().completed() for _ in range(3)] + [SagaLog().declined()]
    expected: dict[str, str] = {}

    bad = SagaLog()
    s = bad.start()
    d = bad.emit(s, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    bad.emit(d, "trk.InventoryReleased", Role.COMPENSATION, "inventory", "inventory.reserve")
    expected[bad.cid] = Code.COMPENSATION_WITHOUT_STEP
    logs.append(bad)

    bad = SagaLog().completed()
    bad.emit(bad.envelopes[-1], "trk.PaymentCharged", Role.STEP, "payment", "payment.charge")
    expected[bad.cid] = Code.EVENT_AFTER_TERMINAL
    logs.append(bad)
    return logs, expected


def test_clean_log_passes() -> None:
    """A log without violations gives ok and the counts in its summary."""
    logs = [SagaLog().completed(), SagaLog().declined()]
    report = verify_records(r for log in logs for r in to_records(log.envelopes))
    assert report.ok
    assert report.summary() == "no violation in 2 sagas (10 events)"


def test_injected_violations_are_each_explained() -> None:
    """Each injected violation is found, with its saga, code and message."""
    logs, expected = injected()
    report = verify_records(r for log in logs for r in to_records(log.envelopes))
    assert not report.ok
    assert {f.correlation_id: f.violation.code for f in report.findings} == expected
    assert report.violated_sagas == 2
    assert all(f.violation.message and f.saga for f in report.findings)
    assert str(report.findings[0]).startswith(report.findings[0].saga)
    assert report.summary().startswith("2 violation(s) in 2 of 6 sagas")
