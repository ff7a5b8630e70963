"""The orchestrator's engine: fold each event into its saga's run, emit what is missing.

The engine is what every handler of an :class:`~choreo.orchestration.Orchestrator` calls.
Handling one event: fold it into the saga's :class:`~choreo.orchestration.state.SagaRun`
(:meth:`Engine.observe`), ask :func:`~choreo.orchestration.state.decide` what is missing,
build those events, fold them in as sent (with the ids the worker will give them,
:func:`~choreo.runtime.routing.derived_event_id` of the incoming event, the handler and
the index), and return them. The worker then stores, publishes and commits them like any
handler's output: inbox, outbox, retries and dead letters are the runtime's.

Guarantees:

- **replays send nothing new.** The outputs of an event are remembered (a bounded cache),
  so a batch the worker rewinds gets the same events with the same ids; after a restart
  the runs are rebuilt from the log (:mod:`choreo.orchestration.rebuild`), an event seen
  again is folded idempotently and :func:`decide` only returns what the log lacks.
- **a late reply never resumes a saga.** A step whose timeout the orchestrator emitted is
  timed out whatever replies come after; they are recorded (``StepRun.late``) and logged.

Ownership (N replicas): a saga lives in the partition its correlation id keys it to, and
the replica the group assigns that partition owns it. The engine remembers each run's
*home* (the partition number its records arrive on, :attr:`Engine.home`) and which
partition numbers this replica owns (:meth:`Engine.own`, None until the first
assignment: everything). :meth:`Engine.adopt` takes in the runs rebuilt for newly
assigned partitions, :meth:`Engine.release` drops the runs of revoked ones, and
:meth:`Engine.overdue` reports only owned runs, so the deadline watcher acts for owned
sagas only (:mod:`choreo.orchestration.ownership` drives this from the worker's
rebalance hooks).

The engine is thread-safe: the worker thread handles events while the deadline watcher
(:mod:`choreo.orchestration.deadlines`) reads the runs.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from choreo.model.envelope import Envelope, Role, now_ms
from choreo.model.events import Event, SagaTimedOut, event_type_of
from choreo.orchestration.events import (
    DEADLINE_PASSED,
    SAGA_COMPENSATION_FAILED,
    DeadlinePassed,
    SagaCompensationFailed,
)
from choreo.orchestration.state import Action, ActionKind, Outcome, SagaRun, decide, undo_order
from choreo.runtime.routing import derived_event_id

if TYPE_CHECKING:
    from choreo.orchestration.spec import SagaPlan

__all__ = ["Engine"]

logger = logging.getLogger(__name__)

_SUCCESS, _FAILURE, _UNDONE = "success", "failure", "undone"
_TIMED_OUT: Final = event_type_of(SagaTimedOut)
_MAX_REMEMBERED: Final = 10_000
_MAX_FINISHED: Final = 100_000


class Engine:
    """Holds every saga's run and turns events into the orchestrator's next events.

    ``clock_ms`` gives the time stamped on sent commands for their deadlines (tests give
    a virtual clock); ``max_finished`` bounds how many ended sagas are kept to recognise
    their late replies.
    """

    def __init__(
        self,
        orch: SagaPlan,
        *,
        clock_ms: Callable[[], int] = now_ms,
        max_finished: int = _MAX_FINISHED,
    ) -> None:
        self.orch = orch
        self.clock_ms = clock_ms
        self.max_finished = max_finished
        self.runs: dict[str, SagaRun] = {}
        self.home: dict[str, int] = {}
        """Correlation id -> the partition number its records arrive on (when known)."""
        self.owned: frozenset[int] | None = None
        """The partition numbers this replica owns; None: all (no assignment seen yet)."""
        self.lock = threading.RLock()
        self._partition = threading.local()  # the partition of the record being handled
        self._strays = 0
        self._allowed: dict[str, frozenset[str]] = {}
        self._outputs: OrderedDict[str, tuple[str, list[Event]]] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._replies: dict[str, tuple[str, str]] = {}
        self._commands: dict[str, tuple[str, bool]] = {}
        for step in orch.steps:
            self._commands[event_type_of(step.command)] = (step.name, False)
            for cls in step.success:
                self._replies[event_type_of(cls)] = (step.name, _SUCCESS)
            for cls in step.failure:
                self._replies[event_type_of(cls)] = (step.name, _FAILURE)
        for name, comp in orch.compensations():
            self._commands[event_type_of(comp.command)] = (name, True)
            for cls in comp.success:
                self._replies[event_type_of(cls)] = (name, _UNDONE)
        self._start = event_type_of(orch.saga.start)
        self._steps = frozenset([*(step.name for step in orch.steps), ""])
        self._deadlines = {step.name: int(step.deadline * 1000) for step in orch.steps}
        self._undo_deadlines = {name: int(c.deadline * 1000) for name, c in orch.compensations()}

    def allow(self, handler: str, event_types: frozenset[str] | set[str]) -> None:
        """Declare what handler ``handler`` may emit (its declared ``emits``)."""
        self._allowed[handler] = frozenset(event_types)

    def deadline_ms(self, step: str, *, compensating: bool) -> int:
        """Return the deadline in ms of ``step``'s command or of its compensation."""
        table = self._undo_deadlines if compensating else self._deadlines
        return table.get(step, int(self.orch.deadline * 1000))

    # --- ownership ---------------------------------------------------------------------

    def handling(self, partition: int | None) -> None:
        """Note the partition number of the record this thread handles next."""
        self._partition.value = partition

    def own(self, partitions: frozenset[int] | None) -> None:
        """Set the partition numbers this replica owns (None: every one)."""
        with self.lock:
            self.owned = partitions

    def owns(self, correlation_id: str) -> bool:
        """Return whether this replica owns the saga (a run of unknown home counts as owned)."""
        owned = self.owned
        if owned is None:
            return True
        home = self.home.get(correlation_id)
        return home is None or home in owned

    def adopt(self, runs: Mapping[str, SagaRun], homes: Mapping[str, int]) -> None:
        """Take in ``runs`` rebuilt from the log for newly owned partitions (``homes``)."""
        with self.lock:
            for cid, run in runs.items():
                self.runs[cid] = run
                self.home[cid] = homes[cid]
                if run.terminal:
                    self.finish(cid)

    def release(self, partitions: frozenset[int]) -> int:
        """Forget the runs whose home is one of ``partitions``; return how many."""
        with self.lock:
            gone = {cid for cid, home in self.home.items() if home in partitions}
            for cid in gone:
                self.runs.pop(cid, None)
                self.home.pop(cid, None)
                self._finished.pop(cid, None)
            for eid in [eid for eid, (cid, _) in self._outputs.items() if cid in gone]:
                del self._outputs[eid]
            return len(gone)

    def _note_home(self, correlation_id: str) -> None:
        """Remember the partition of the record in hand as the saga's home (warn if it moved)."""
        partition = getattr(self._partition, "value", None)
        if partition is None:
            return
        home = self.home.setdefault(correlation_id, partition)
        if home != partition and self._strays < 10:
            self._strays += 1
            logger.warning(
                "%s: saga %s has records on partitions %d and %d: its topics are not "
                "partitioned alike by correlation id, so replicas cannot own it alone",
                self.orch.name,
                correlation_id,
                home,
                partition,
            )

    # --- handling ----------------------------------------------------------------------

    def handle(self, handler: str, event: Event, ctx: Any) -> list[Event]:
        """Fold ``event`` (delivered to ``handler`` with ``ctx``) and return what to emit."""
        envelope: Envelope = ctx.envelope
        with self.lock:
            known = self._outputs.get(envelope.event_id)
            if known is not None:
                return list(known[1])
            self._note_home(envelope.correlation_id)
            run = self.runs.get(envelope.correlation_id)
            if run is None:
                if envelope.event_type != self._start or envelope.saga != self.orch.saga.name:
                    ours = envelope.saga == self.orch.saga.name  # else another saga's event
                    (ctx.log.warning if ours else ctx.log.debug)(
                        "no run of saga %s here; %s ignored", envelope.saga, envelope.event_type
                    )
                    return []
                run = self._new_run(envelope.correlation_id)
            if self.observe(run, envelope, event):
                ctx.log.warning(
                    "late reply %s after the step timed out: recorded and ignored",
                    envelope.event_type,
                )
            outputs = self._settle(run, envelope.event_id, handler)
            self._outputs[envelope.event_id] = (run.correlation_id, outputs)
            if len(self._outputs) > _MAX_REMEMBERED:
                self._outputs.popitem(last=False)
            if run.terminal:
                self.finish(run.correlation_id)
            return list(outputs)

    def observe(self, run: SagaRun, envelope: Envelope, event: Event | None) -> bool:
        """Fold one event of ``run`` (any order, idempotent); return True for a late reply."""
        event_type = envelope.event_type
        eid = envelope.event_id
        if event_type == self._start and envelope.role is Role.START:
            run.start, run.start_id = event, eid
            return False
        reply = self._replies.get(event_type)
        if reply is not None and envelope.service != self.orch.name:
            return self._observe_reply(run, reply, eid, event)
        if envelope.service == self.orch.name:
            self._observe_own(run, envelope, event)
        return False

    def _observe_own(self, run: SagaRun, envelope: Envelope, event: Event | None) -> None:
        """Fold one of the orchestrator's own events: a command, a timeout, a deadline, an end."""
        event_type = envelope.event_type
        eid = envelope.event_id
        run.emitted.add(eid)
        command = self._commands.get(event_type)
        if command is not None:
            state = run.step(command[0])
            target = state.undo_commands if command[1] else state.commands
            target.setdefault(eid, envelope.produced_at_ms)
        elif event_type == _TIMED_OUT and isinstance(event, SagaTimedOut):
            step = self._local(event.step)
            if step in self._steps:  # names from the payload: only our own steps count
                run.step(step).timed_out = True
                if run.failure is None:
                    run.failure = event
        elif event_type == DEADLINE_PASSED and isinstance(event, DeadlinePassed):
            step = self._local(event.step)
            if step in self._steps:
                state = run.step(step)
                (state.undo_overdue if event.compensating else state.overdue).add(event.attempt)
        elif envelope.role in (Role.COMPLETED, Role.FAILED):
            run.terminal[eid] = event_type
            run.completed = run.completed or envelope.role is Role.COMPLETED
            run.gave_up = run.gave_up or event_type == SAGA_COMPENSATION_FAILED

    def _observe_reply(
        self, run: SagaRun, reply: tuple[str, str], eid: str, event: Event | None
    ) -> bool:
        step, kind = reply
        state = run.step(step)
        if kind == _UNDONE:
            state.undone.add(eid)
            return False
        (state.successes if kind == _SUCCESS else state.failures)[eid] = event
        if kind == _FAILURE and run.failure is None:
            run.failure = event
        if state.timed_out:
            state.late.add(eid)
            return True
        return False

    def _local(self, step_header: str) -> str:
        prefix = f"{self.orch.name}."
        local = step_header[len(prefix) :] if step_header.startswith(prefix) else step_header
        return "" if local == "start" else local

    def _new_run(self, correlation_id: str) -> SagaRun:
        run = self.runs[correlation_id] = SagaRun(self.orch.saga.name, correlation_id)
        return run

    def run_for(self, correlation_id: str) -> SagaRun:
        """Return (creating) the run of ``correlation_id`` (used by the rebuild)."""
        return self.runs.get(correlation_id) or self._new_run(correlation_id)

    def finish(self, correlation_id: str) -> None:
        """Remember an ended saga; forget the oldest ones beyond ``max_finished``."""
        self._finished[correlation_id] = None
        while len(self._finished) > self.max_finished:
            old, _ = self._finished.popitem(last=False)
            self.runs.pop(old, None)
            self.home.pop(old, None)

    # --- deciding ----------------------------------------------------------------------

    def _settle(self, run: SagaRun, parent_id: str, handler: str) -> list[Event]:
        """Emit what ``run`` misses, folding each output in as sent, until nothing is."""
        allowed = self._allowed.get(handler, frozenset())
        step_id = self.orch.step_id(handler)
        outputs: list[Event] = []
        known = frozenset(run.emitted)  # our events the log holds already
        for _ in range(4 * len(self.orch.steps) + 8):
            actions = decide(self.orch, run)
            if not actions:
                break
            progressed = False
            for action in actions:
                event = self._build(run, action)
                if event_type_of(event) not in allowed:
                    logger.debug("%s: %s left for the deadline handler", handler, action)
                    continue
                eid = derived_event_id(parent_id, step_id, len(outputs))
                if eid in known:
                    # This event was handled before (by a previous owner) and its output
                    # at this position is in the log: the run, rebuilt with later records,
                    # now asks for something else, which would reuse that id and be
                    # dropped everywhere as a duplicate. Leave it to a later event.
                    logger.info(
                        "%s: %s of saga %s was handled before; %s left for a later event",
                        handler,
                        parent_id,
                        run.correlation_id,
                        action,
                    )
                    return outputs
                self._sent(run, action, event, eid)
                outputs.append(event)
                progressed = True
            if not progressed:
                break
        return outputs

    def _build(self, run: SagaRun, action: Action) -> Event:
        orch = self.orch
        kind = action.kind
        if kind in (ActionKind.COMMAND, ActionKind.RESEND):
            return next(s for s in orch.steps if s.name == action.step).build(run)
        if kind is ActionKind.COMPENSATE:
            comp = dict(orch.compensations())[action.step]
            return comp.build(run)
        if kind is ActionKind.TIMEOUT:
            return SagaTimedOut(
                saga=run.saga,
                correlation_id=run.correlation_id,
                step=orch.step_id(action.step),
                deadline_ms=self.deadline_ms(action.step, compensating=False),
                detected_at=self.clock_ms(),
            )
        if kind is ActionKind.COMPLETED:
            return orch.build_completed(run)
        if kind is ActionKind.FAILED:
            return orch.build_failed(run)
        state = run.step(action.step)
        names = ["" if s is None else s.name for s in undo_order(orch, run)]
        pending = [name or "start" for name in names if not run.step(name).undone]
        return SagaCompensationFailed(
            saga=run.saga,
            correlation_id=run.correlation_id,
            step=orch.step_id(action.step or "start"),
            attempts=state.undo_attempt,
            pending=pending,
        )

    def _sent(self, run: SagaRun, action: Action, event: Event, eid: str) -> None:
        """Fold one of our own outputs into ``run`` as sent now."""
        at = self.clock_ms()
        kind = action.kind
        run.emitted.add(eid)
        state = run.step(action.step)
        if kind in (ActionKind.COMMAND, ActionKind.RESEND):
            state.commands.setdefault(eid, at)
        elif kind is ActionKind.COMPENSATE:
            state.undo_commands.setdefault(eid, at)
        elif kind is ActionKind.TIMEOUT:
            state.timed_out = True
            if run.failure is None:
                run.failure = event
        else:
            run.terminal[eid] = event_type_of(event)
            run.completed = kind is ActionKind.COMPLETED
            run.gave_up = kind is ActionKind.GIVE_UP

    # --- what the deadline watcher reads -----------------------------------------------

    def overdue(self, now: int) -> list[tuple[SagaRun, str, bool, int, str, int]]:
        """Return (run, step, compensating, attempt, command id, deadline ms) overdue at ``now``.

        A command is overdue when its reply did not come within its deadline and no
        deadline notice for that attempt was folded in yet. Only sagas this replica owns
        are reported (see :meth:`owns`).
        """
        found = []
        with self.lock:
            for run in self.runs.values():
                if run.terminal or run.start is None or not self.owns(run.correlation_id):
                    continue
                for name, state in run.steps.items():
                    if state.outcome is Outcome.SENT and state.attempt not in state.overdue:
                        limit = self.deadline_ms(name, compensating=False)
                        if now - state.sent_at_ms >= limit:
                            last = max(state.commands, key=lambda k: (state.commands[k], k))
                            found.append((run, name, False, state.attempt, last, limit))
                    if state.undo_commands and not state.undone:
                        if state.undo_attempt in state.undo_overdue:
                            continue
                        limit = self.deadline_ms(name, compensating=True)
                        if now - state.undo_sent_at_ms >= limit:
                            cmds = state.undo_commands
                            last = max(cmds, key=lambda k: (cmds[k], k))
                            found.append((run, name, True, state.undo_attempt, last, limit))
        return found

    def snapshot(self) -> Mapping[str, SagaRun]:
        """Return the runs (a shallow copy; the runs themselves are live)."""
        with self.lock:
            return dict(self.runs)
