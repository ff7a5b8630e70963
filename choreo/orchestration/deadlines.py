"""The deadline watcher: publish ``choreo.DeadlinePassed`` for commands that got no reply in time.

Like the tracker's :class:`~choreo.tracker.TimeoutService`, the watcher only *notices*;
unlike it, it decides nothing: the notice (role ``notice``) goes to the orchestrator's own
``deadline`` handler, which folds it into the saga and decides there, in the worker's
order, whether the step timed out (a reply handled first wins), a retriable step or a
compensation is sent again, or the saga ends *compensation failed*.

A notice's id is derived from the overdue command's id and the attempt, so a restarted
watcher that notices the same deadline again publishes the same id (the orchestrator's
inbox and fold drop the copy). Time comes from ``clock_ms``; the testing kit gives a
virtual clock so deadlines pass without waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from choreo.model.envelope import Envelope, Role, now_ms
from choreo.model.topics import TopicNaming
from choreo.orchestration.events import DEADLINE_PASSED, DeadlinePassed
from choreo.runtime.routing import derived_event_id
from choreo.transports.base import Producer, Transport

if TYPE_CHECKING:
    from choreo.orchestration.declaration import Orchestrator
    from choreo.runtime.worker import Serde

__all__ = ["DeadlineWatcher"]

logger = logging.getLogger(__name__)


class DeadlineWatcher:
    """Publishes one ``choreo.DeadlinePassed`` per overdue command of ``orchestrator``.

    Call :meth:`check` yourself, or :meth:`start` a thread that calls it every
    ``interval`` seconds.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        transport: Transport,
        serde: Serde,
        *,
        topic_naming: TopicNaming,
        clock_ms: Callable[[], int] = now_ms,
        interval: float = 0.5,
    ) -> None:
        self.orchestrator = orchestrator
        self.transport = transport
        self.serde = serde
        self.topic = topic_naming(DEADLINE_PASSED)
        self.clock_ms = clock_ms
        self.interval = interval
        self.error: BaseException | None = None
        """The exception that ended the thread, if one did."""
        self._noticed: set[tuple[str, str, bool, int]] = set()
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, now: int | None = None) -> list[Envelope]:
        """Publish a notice for every command overdue at ``now``; return their envelopes."""
        at = self.clock_ms() if now is None else now
        orch = self.orchestrator
        overdue = orch.engine.overdue(at)
        keys = {
            (run.correlation_id, step, undo, attempt) for run, step, undo, attempt, _, _ in overdue
        }
        self._noticed &= keys  # forget notices the fold has taken in
        sent: list[Envelope] = []
        for run, step, compensating, attempt, command_id, limit in overdue:
            key = (run.correlation_id, step, compensating, attempt)
            if key in self._noticed:
                continue
            envelope = Envelope(
                event_type=DEADLINE_PASSED,
                event_id=derived_event_id(command_id, orch.step_id("deadline"), attempt),
                correlation_id=run.correlation_id,
                saga=run.saga,
                role=Role.NOTICE,
                service=orch.name,
                produced_at_ms=now_ms(),  # the wall clock, like every envelope
                causation_id=command_id,
                step=orch.step_id(step or "start"),
            )
            notice = DeadlinePassed(
                saga=run.saga,
                correlation_id=run.correlation_id,
                step=orch.step_id(step or "start"),
                compensating=compensating,
                attempt=attempt,
                deadline_ms=limit,
                detected_at=at,
            )
            if self._producer is None:
                self._producer = self.transport.producer()
            self._producer.publish(
                self.topic,
                self.serde.encode(notice),
                key=run.correlation_id.encode(),
                headers=envelope.to_headers(),
            )
            sent.append(envelope)
            self._noticed.add(key)
        if sent:
            assert self._producer is not None
            self._producer.flush()
            logger.info("%s: %d deadline(s) passed", orch.name, len(sent))
        return sent

    def start(self) -> DeadlineWatcher:
        """Start a thread calling :meth:`check` every ``interval`` seconds; return self."""
        if self._thread is not None:
            raise RuntimeError("this DeadlineWatcher was started already")
        self._thread = threading.Thread(
            target=self._run, name=f"choreo-deadlines-{self.orchestrator.name}", daemon=True
        )
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
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # a broker hiccup: the next pass notices again
                self.error = exc
                logger.warning("deadline watcher of %s: %s", self.orchestrator.name, exc)
