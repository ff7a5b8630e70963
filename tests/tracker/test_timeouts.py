"""Sagas with timeouts: the timeout service turns a stuck saga into a failure, once."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from tracker_log import T0, SagaLog, build_choreography, to_records

from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.model.envelope import Envelope, Header, Role, headers_to_dict
from choreo.tracker import TIMEOUT_EVENT_TYPE, SagaState, SagaStatus, Tracker
from choreo.tracker.timeouts import TIMEOUT_SERVICE, TimeoutService
from choreo.transports.memory import MemoryBus, MemoryTransport


@pytest.fixture
def codec(tmp_path: Path) -> SingleObjectCodec:
    """Return a codec knowing choreo's built-in schemas (choreo.SagaTimedOut)."""
    return SingleObjectCodec(load_directory(tmp_path))


def test_stuck_saga_times_out_once(codec: SingleObjectCodec) -> None:
    """A saga past its step deadline gets one SagaTimedOut failure, caused by its last event."""
    bus = MemoryBus()
    transport = MemoryTransport(bus)
    tracker = Tracker(choreography=build_choreography(payment_deadline=2.0))
    log = SagaLog()
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    healthy = SagaLog(start_ms=r.produced_at_ms + 10_000).completed()
    tracker.feed_many(to_records(log.envelopes + healthy.envelopes))
    service = TimeoutService(tracker, transport, codec.encode)
    assert service.run_once(now=r.produced_at_ms + 1_999) == []
    sent = service.run_once(now=r.produced_at_ms + 2_001)
    assert [e.correlation_id for e in sent] == [log.cid]
    assert service.run_once(now=r.produced_at_ms + 60_000) == []  # once per saga

    [record] = bus.records(TIMEOUT_EVENT_TYPE)
    assert record.key == log.cid.encode()
    envelope = Envelope.from_headers(headers_to_dict(record.headers))
    assert envelope.role is Role.FAILURE
    assert envelope.service == TIMEOUT_SERVICE
    assert envelope.causation_id == r.event_id
    assert envelope.saga == log.saga
    assert envelope.step == "payment.charge"
    name, payload = codec.decode_any(record.value or b"")
    assert name == TIMEOUT_EVENT_TYPE
    assert payload["correlation_id"] == log.cid
    assert payload["saga"] == log.saga
    assert payload["step"] == "payment.charge"
    assert payload["deadline_ms"] == 2_000

    trace = tracker.feed(record)
    assert trace is not None
    assert trace.timed_out and trace.state is SagaState.COMPENSATING
    late = log.emit(r, "trk.PaymentCharged", Role.STEP, "payment", "payment.charge",
                    at=envelope.produced_at_ms + 5)
    trace = tracker.feed(to_records([late])[0])
    assert trace is not None
    assert [e.late for e in trace.events if e.event_id == late.event_id] == [True]
    assert trace.violations == []


def test_a_logged_timeout_is_not_sent_again(codec: SingleObjectCodec) -> None:
    """A saga whose log already holds its timeout (e.g. before a restart) is skipped."""
    tracker = Tracker(default_deadline_s=1.0)
    log = SagaLog()
    s = log.start()
    log.emit(s, TIMEOUT_EVENT_TYPE, Role.FAILURE, TIMEOUT_SERVICE, "x.y")
    tracker.feed_many(to_records(log.envelopes))
    transport = MemoryTransport(MemoryBus())
    service = TimeoutService(tracker, transport, codec.encode)
    assert service.run_once(now=s.produced_at_ms + 100_000) == []


def test_service_thread_runs_and_stops(codec: SingleObjectCodec) -> None:
    """Started as a service it sends due timeouts on its own; stop ends it cleanly."""
    bus = MemoryBus()
    log = SagaLog(start_ms=0)
    log.start()
    tracker = Tracker(default_deadline_s=1.0, clock=lambda: 1_000.0)
    tracker.feed_many(to_records(log.envelopes))
    service = TimeoutService(tracker, MemoryTransport(bus), codec.encode, interval=0.01).start()
    try:
        import time

        deadline = time.monotonic() + 30
        while not bus.topics() or not bus.records(TIMEOUT_EVENT_TYPE):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        service.stop()
    assert service.error is None
    [record] = bus.records(TIMEOUT_EVENT_TYPE)
    assert headers_to_dict(record.headers)[Header.CORRELATION_ID] == log.cid.encode()


def test_timeout_pass_reads_only_due_sagas() -> None:
    """The timeout service reads the sagas due, not every stuck or finished one, on each pass."""
    tracker = Tracker(default_deadline_s=1.0)
    logs = []
    for index in range(40):  # stuck while compensating: left to a human, never timed out
        log = SagaLog(cid=f"comp-{index}")
        s = log.start()
        log.emit(s, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
        logs.append(log)
    forward = SagaLog(cid="forward")
    forward.start()
    done = SagaLog(cid="done").completed()
    tracker.feed_many(to_records([e for log in [*logs, forward, done] for e in log.envelopes]))
    service = TimeoutService(tracker, MemoryTransport(MemoryBus()), lambda name, datum: b"x")
    now = T0 + 60_000
    with mock.patch.object(tracker, "get", wraps=tracker.get) as get:
        sent = service.run_once(now)
        assert [e.correlation_id for e in sent] == ["forward"]
        assert {call.args[0] for call in get.call_args_list} == {"forward"}
        get.reset_mock()
        assert service.run_once(now + 1_000) == []
        assert get.call_count == 0
    assert tracker.counts()[SagaStatus.STUCK] == 41
