"""A participant refuses a late command: a forward command for a saga it already compensated.

An orchestrator compensates a step whose reply did not come in time without knowing
whether it ran; commands and compensation commands travel on different topics, so the
compensation can reach the participant *before* the command it undoes. Running that
command afterwards would apply a step nobody will undo. So a service that has
compensations remembers, per saga, that a compensation command (role ``compensate``)
reached it, and then refuses every forward command (role ``command``) of that saga:

- the refused command is **never applied** (its handler is not called, no reply);
- it is **recorded**: a warning in the log, and the command goes to the service's
  dead-letter topic with reason ``refused-after-compensation`` (no human needed), which
  the tracker shows in the saga's trace and ``choreo sagas --dead-letters`` lists.

The mark is a row of the service's store (the inbox table, consumer ``<group>#compensated``,
key the correlation id), written in the batch's transaction: it survives a restart, is
shared by every replica on a shared store (PostgreSQL), and is pruned with the inbox
(``inbox_retention``). A command handled before its compensation arrived runs normally
(the compensation then undoes it). With ``concurrency > 1`` handlers run on pool threads
without the store, and commands are not guarded (a warning says so at start).

Cost: one indexed store lookup per command (role ``command``) of a service that has
compensations. Choreographed events cost nothing per event: the guards need each
record's headers (a handler context), which would take every handler of such a service
off the dispatcher's context-free fast path, so the worker asks :meth:`Refusals.arm` per
polled batch, and the guarded handlers are in place only for a batch that holds a
command or a compensation command (one C-level set test over the batch's headers).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, Final

from choreo.choreography.service import Service, StepKind
from choreo.errors import ChoreoError
from choreo.model.envelope import Header, Role
from choreo.runtime.routing import Route
from choreo.store import Inbox
from choreo.transports.base import Record

__all__ = ["CommandRefusedError", "Refusals"]

logger = logging.getLogger("choreo.runtime.refusal")

_ROLE: Final = Header.ROLE
_CID: Final = Header.CORRELATION_ID
_COMMAND: Final = Role.COMMAND.value.encode()
_COMPENSATE: Final = Role.COMPENSATE.value.encode()
_FORWARD: Final = frozenset({StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE})
_REMEMBERED: Final = 10_000
_ORDERS: Final = frozenset({(str(_ROLE), _COMMAND), (str(_ROLE), _COMPENSATE)})
"""The (name, value) header pairs of an orchestrator's commands: what arms the guards."""
_HEADERS: Final = attrgetter("headers")


class CommandRefusedError(ChoreoError):
    """A command was refused because its saga was compensated here already (never retried)."""


class Refusals:
    """Marks compensated sagas and refuses their late commands on one service's routes.

    ``inbox`` holds the marks (consumer ``<group_id>#compensated``); ``clock_ms`` stamps
    them. :meth:`install` wraps the routes of the service's handlers.
    """

    def __init__(self, inbox: Inbox, group_id: str, clock_ms: Callable[[], int]) -> None:
        self.inbox = inbox
        self.consumer = f"{group_id}#compensated"
        self.clock_ms = clock_ms
        self.refused = 0
        """How many commands this process refused."""
        self._recent: OrderedDict[str, None] = OrderedDict()  # marked in this process
        # (route, its own handler and takes_context, the guarding handler), per route
        self._swaps: list[tuple[Route, Callable[..., Any], bool, Callable[..., Any]]] = []
        self._armed = False

    @staticmethod
    def applies(service: Service) -> bool:
        """Return whether ``service`` has a compensation (only then are commands guarded)."""
        return any(spec.kind is StepKind.COMPENSATION for spec in service.handlers)

    def install(self, routes: Mapping[str, Route]) -> None:
        """Wrap each compensation route (marks) and forward step route (refuses).

        The wrappers are in place from here on until :meth:`arm` finds a batch without
        commands (the worker calls it before dispatching each batch).
        """
        for route in routes.values():
            kind = route.spec.kind
            if kind is StepKind.COMPENSATION:
                guard = self._marking(route.func, route.takes_context)
            elif kind in _FORWARD:
                guard = self._guarded(route.func, route.takes_context)
            else:
                continue
            self._swaps.append((route, route.func, route.takes_context, guard))
        self._set(armed=True)

    def arm(self, records: Sequence[Record]) -> bool:
        """Put the guards in place for ``records`` if one of them is an orchestrator's order.

        An order is a record with a role header ``command`` or ``compensate`` (any of its
        role headers: more than needed is harmless, the guards read the last one; headers
        that cannot be tested at once arm them too). Without one, the routes get their own
        handlers back, so choreographed events take the
        dispatcher's fast path. Returns whether the guards are in place.
        """
        try:
            armed = not _ORDERS.isdisjoint(chain.from_iterable(map(_HEADERS, records)))
        except TypeError:  # a header pair that is not a tuple (a list): look at each record
            armed = True
        if armed is not self._armed:
            self._set(armed=armed)
        return armed

    def _set(self, *, armed: bool) -> None:
        """Give every guarded route its guard (``armed``) or its own handler back."""
        for route, func, takes_context, guard in self._swaps:
            if armed:
                route.func, route.takes_context = guard, True
            else:
                route.func, route.takes_context = func, takes_context
        self._armed = armed

    def compensated(self, correlation_id: str) -> bool:
        """Return whether a compensation command of ``correlation_id`` reached this service."""
        if correlation_id in self._recent:
            return True
        return bool(self.inbox.seen(self.consumer, [correlation_id]))

    def _mark(self, correlation_id: str) -> None:
        if correlation_id in self._recent:
            return
        self.inbox.add(self.consumer, [correlation_id], self.clock_ms())
        self._recent[correlation_id] = None
        if len(self._recent) > _REMEMBERED:
            self._recent.popitem(last=False)

    def _marking(self, func: Callable[..., Any], takes_context: bool) -> Callable[..., Any]:
        def marking(event: Any, ctx: Any) -> Any:
            headers = ctx._headers
            if headers.get(_ROLE) == _COMPENSATE:
                self._mark(headers[_CID].decode())
            return func(event, ctx) if takes_context else func(event)

        return marking

    def _guarded(self, func: Callable[..., Any], takes_context: bool) -> Callable[..., Any]:
        def guarded(event: Any, ctx: Any) -> Any:
            headers = ctx._headers
            if headers.get(_ROLE) == _COMMAND:
                cid = headers[_CID].decode()
                if self.compensated(cid):
                    self.refused += 1
                    ctx.log.warning(
                        "late command refused: saga %s was compensated here already; "
                        "not applied (recorded on the dead-letter topic)",
                        cid,
                    )
                    raise CommandRefusedError(
                        f"{ctx.envelope.event_type} refused: saga {cid} was compensated "
                        f"by {ctx.service} already"
                    )
            return func(event, ctx) if takes_context else func(event)

        return guarded
