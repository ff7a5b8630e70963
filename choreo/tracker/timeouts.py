"""Sagas with timeouts: turn a stuck saga into a failure, so it compensates like any other.

:class:`TimeoutService` watches a tracker (fed by a :class:`~choreo.tracker.live.LiveTracker`)
and, for each running saga whose step deadline passed, publishes one
``choreo.SagaTimedOut`` event: role ``failure``, the saga's correlation id and name,
caused by the saga's last event, from service ``choreo-tracker``, on the topic named by its
type. Services' compensations that react to ``choreo.SagaTimedOut`` then undo the
completed steps. A step event that arrives after the timeout is shown as *late* by the
fold.

Each pass reads only what the tracker's saga index lists as overdue and still moving
forward, so its cost does not grow with the number of stuck or finished sagas.

Only sagas still moving forward (Started or Pending) time out, and never a saga an
orchestrator runs (the choreography says which): the orchestrator times its own steps
out; a saga stuck while compensating is left to a human (it shows as Stuck). Each saga
times out at most once: the service remembers what it sent, and a saga whose log already
holds a timeout is skipped, so a restarted service does not send it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from choreo.model.envelope import Envelope, Role, new_event_id
from choreo.tracker.fold import TIMEOUT_EVENT_TYPE
from choreo.tracker.model import SagaState, SagaTrace, TraceEvent
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Producer, Transport

__all__ = ["TIMEOUT_SERVICE", "TimeoutService"]

logger = logging.getLogger(__name__)

TIMEOUT_SERVICE: Final = "choreo-tracker"
"""The producing service of the timeout events."""

_FORWARD_STATES: Final = (SagaState.STARTED, SagaState.PENDING)

Encode = Callable[[str, Mapping[str, Any]], bytes]


class TimeoutService:
    """Publishes a ``choreo.SagaTimedOut`` failure for each saga whose deadline passed.

    ``encode(full_name, datum)`` encodes the payload (e.g. ``SingleObjectCodec.encode``);
    ``clock_ms`` gives the current time in epoch milliseconds (the tracker's clock when
    None). Call :meth:`run_once` yourself or :meth:`start` a thread that calls it every
    ``interval`` seconds.
    """

    def __init__(
        self,
        tracker: Tracker,
        transport: Transport,
        encode: Encode,
        *,
        service: str = TIMEOUT_SERVICE,
        topic: str = TIMEOUT_EVENT_TYPE,
        interval: float = 1.0,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.tracker = tracker
        self.transport = transport
        self.encode = encode
        self.service = service
        self.topic = topic
        self.interval = interval
        self.clock_ms = clock_ms or (lambda: int(tracker.clock() * 1000))
        self.error: BaseException | None = None
        """The exception that ended the thread, if one did."""
        self._sent: set[str] = set()
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass -----------------------------------------------------------------------

    def due(self, now: int) -> list[SagaTrace]:
        """Return the running sagas whose deadline passed and that have not timed out yet.

        Only the sagas the tracker's index lists as overdue and still moving forward
        (:meth:`~choreo.tracker.Tracker.timeout_candidates`) are read, not every stuck
        saga: a pass costs O(log n) plus the sagas due and those sent but not yet seen
        back in the log.
        """
        tracker = self.tracker
        tracker.check_deadlines(now)
        candidates = tracker.timeout_candidates(now)
        self._forget_settled(set(candidates))
        due: list[SagaTrace] = []
        facts = tracker.facts
        orchestrated = facts.orchestrated if facts is not None else frozenset()
        for cid in candidates:
            if cid in self._sent:
                continue
            trace = tracker.get(cid)
            if (
                trace is not None
                and trace.saga not in orchestrated
                and trace.state in _FORWARD_STATES
                and not trace.timed_out
                and trace.deadline_ms is not None
                and now > trace.deadline_ms
            ):
                due.append(trace)
        return due

    def _forget_settled(self, candidates: set[str]) -> None:
        """Stop remembering sent timeouts whose saga has timed out or ended in the log."""
        for cid in [cid for cid in self._sent if cid not in candidates]:
            trace = self.tracker.get(cid)
            if trace is None or trace.timed_out or trace.state not in _FORWARD_STATES:
                self._sent.discard(cid)

    def run_once(self, now: int | None = None) -> list[Envelope]:
        """Publish the timeout of every due saga, flush, and return the envelopes sent."""
        at = self.clock_ms() if now is None else now
        sent: list[Envelope] = []
        due = self.due(at)
        if not due:
            return sent
        if self._producer is None:
            self._producer = self.transport.producer()
        for trace in due:
            envelope, payload = self.timeout_of(trace, at)
            self._producer.publish(
                self.topic,
                self.encode(TIMEOUT_EVENT_TYPE, payload),
                key=trace.correlation_id.encode(),
                headers=envelope.to_headers(),
            )
            sent.append(envelope)
        self._producer.flush()
        for envelope in sent:
            self._sent.add(envelope.correlation_id)
            logger.info(
                "saga %s %s timed out (%s)",
                envelope.saga, envelope.correlation_id, envelope.step,
            )
        return sent

    def timeout_of(self, trace: SagaTrace, now: int) -> tuple[Envelope, dict[str, Any]]:
        """Return the envelope and payload of ``trace``'s timeout event at time ``now``."""
        last = _last_active(trace)
        step = self._awaited_step(trace.saga, last)
        envelope = Envelope(
            event_type=TIMEOUT_EVENT_TYPE,
            event_id=new_event_id(),
            correlation_id=trace.correlation_id,
            saga=trace.saga,
            role=Role.FAILURE,
            service=self.service,
            produced_at_ms=now,
            causation_id=last.event_id if last is not None else None,
            step=step,
        )
        payload = {
            "saga": trace.saga,
            "correlation_id": trace.correlation_id,
            "step": step,
            "deadline_ms": self._deadline_after(trace.saga, last),
            "detected_at": now,
        }
        return envelope, payload

    def _awaited_step(self, saga: str, last: TraceEvent | None) -> str:
        """Return the step expected to react to the last event (else the last event's step)."""
        if last is None:
            return ""
        facts = self.tracker.facts
        if facts is not None:
            reacting = facts.reacting_steps.get(last.event_type, ())
            forward = [step for step in reacting if step in facts.forward_steps]
            if forward or reacting:
                return (forward or list(reacting))[0]
        return last.step or last.event_type

    def _deadline_after(self, saga: str, last: TraceEvent | None) -> int:
        default = self.tracker.default_deadline_ms
        facts = self.tracker.facts
        if facts is None or last is None:
            return default
        return facts.deadline_ms(last.event_type, saga, default)

    # --- as a service -------------------------------------------------------------------

    def start(self) -> TimeoutService:
        """Start a thread calling :meth:`run_once` every ``interval`` seconds; return self."""
        if self._thread is not None:
            raise RuntimeError("this TimeoutService was already started")
        self._thread = threading.Thread(target=self._run, name="choreo-timeouts", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close the producer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.run_once()
        except BaseException as exc:
            self.error = exc
            logger.exception("the timeout service stopped")


def _last_active(trace: SagaTrace) -> TraceEvent | None:
    """Return the saga's last event that is not a notice (its last event when all are)."""
    for event in reversed(trace.events):
        if event.role is not Role.NOTICE:
            return event
    return trace.events[-1] if trace.events else None

