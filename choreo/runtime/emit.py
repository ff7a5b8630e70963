"""Building the records a handler emits: deterministic ids, propagated headers, traceparent.

An :class:`Emitter` turns the events a handler returned into
:class:`~choreo.store.outbox.OutboxRecord` values ready to publish. Each event gets the
id :func:`~choreo.runtime.routing.derived_event_id` (parent id, step, index), so a handler
re-run after a crash re-emits the same ids and downstream inboxes drop the copies; the
incoming record's correlation id, saga and trace; the emitting step's role, service and
step headers; and the produced-at time of the batch in hand. The headers are exactly what
:meth:`~choreo.model.envelope.Envelope.to_headers` would give for an event caused by the
incoming one (pinned by a test), built from the route's precomputed plans.
"""

from __future__ import annotations

import inspect
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from choreo.errors import BusinessFailure, HandlerError
from choreo.model.envelope import Header
from choreo.model.events import Event
from choreo.runtime.aio import close_unawaited
from choreo.runtime.routing import _NAMESPACE_SHA1, _SUFFIXES, _VARIANT, EmitPlan, Fields, Route
from choreo.runtime.tracing import is_valid
from choreo.store.outbox import OutboxRecord

__all__ = ["Emitter", "as_events", "failure_event"]

_ID = Header.EVENT_ID
_AT = Header.PRODUCED_AT
_CAUSE = Header.CAUSATION_ID
_TRACE = Header.TRACEPARENT

# a SHA-1's 40 hex digits -> the groups of a uuid5's text: 8, 4, (version) 3, variant
# digit, 3, 12 (the last 8 digits are not part of it)
_HEX_GROUPS: Final = struct.Struct("8s4sx3s1s3s12s8x").unpack
_UUID_TEXT: Final = struct.Struct("8sx4sx1s3sx1s3sx12s").pack  # NUL where a dash goes
# a valid traceparent's first 36 bytes ("00-" and the trace id), a span id of 1 + 3 + 12
# hex digits, and its last 3 ("-" and the flags): the child traceparent in one call
_CHILD: Final = struct.Struct("36s1s3s12s3s").pack
_VARIANT_BYTES: Final = {digit.encode(): v.encode() for digit, v in _VARIANT.items()}
# an OutboxRecord from a tuple of its fields, without NamedTuple's Python-level __new__
_tuple_new = cast("Callable[[type[OutboxRecord], tuple[Any, ...]], OutboxRecord]", tuple.__new__)


class Emitter:
    """Encodes emitted events into outbox records with ids and headers derived from the cause.

    ``encode`` is the serde's encoder; ``encoder_for`` (optional, e.g.
    :meth:`~choreo.avro.serde.EventSerde.encoder_for`) returns the function that encodes
    one class exactly as ``encode`` does, called once per class. ``tracing`` says whether
    a ``traceparent`` is propagated. The worker sets :attr:`produced_at` once per batch
    (:meth:`start_batch`); the dispatcher sets :attr:`traces_valid` when it checked every
    traceparent of the batch at once.
    """

    __slots__ = ("encode", "encoder_for", "encoders", "produced_at", "traces_valid", "tracing")

    def __init__(
        self,
        encode: Callable[[Event], bytes],
        *,
        tracing: bool,
        encoder_for: Callable[[type[Event]], Callable[[Event], bytes]] | None = None,
    ) -> None:
        self.encode = encode
        self.encoder_for = encoder_for
        self.encoders: dict[type, Callable[[Event], bytes]] = {}
        self.tracing = tracing
        self.produced_at: tuple[str, bytes] = (_AT, b"0")
        self.traces_valid = False

    def start_batch(self, now_ms: int) -> None:
        """Stamp the records of the next batch with ``now_ms`` as their produced-at time."""
        self.produced_at = (_AT, str(now_ms).encode())

    def emit_one(self, route: Route, fields: Fields, event: Event, index: int = 0) -> OutboxRecord:
        """Return the outbox record of the ``index``-th event a handler emitted.

        The event gets the id :func:`~choreo.runtime.routing.derived_event_id` (parent id,
        step, ``index``), inlined here because it is on the per-event path; the incoming
        record's correlation id, saga and trace (with the id's last 16 hex digits as span
        id, as :func:`~choreo.runtime.tracing.child_traceparent`); and the batch's
        produced-at time. Raises :class:`~choreo.errors.HandlerError` for an event the
        handler did not declare (checked when its plan is built).
        """
        _, _, saga, trace, parent_id, cid, saga_pair = fields
        cls = event.__class__
        last_cls, last_saga, plan, encode = route.last  # the previous event's, mostly
        if last_cls is not cls or last_saga != saga:
            plan, encode = self._plan(route, cls, saga)
        digest = _NAMESPACE_SHA1.copy()  # uuid5 of "<parent id>/<step>/<index>"
        digest.update(
            parent_id + (route.id_suffixes[index] if index < _SUFFIXES else route.id_suffix(index))
        )
        # the hex digits cut by one struct call and put together with the version (5),
        # the variant digit and NULs for the dashes by another (then made dashes): no
        # slice per group
        head, mid, low, variant, clock, node = _HEX_GROUPS(digest.hexdigest().encode())
        variant = _VARIANT_BYTES[variant]
        id_bytes = _UUID_TEXT(head, mid, b"5", low, variant, clock, node).replace(b"\0", b"-")
        event_id = id_bytes.decode()
        if trace is None or not self.tracing:
            headers: tuple[tuple[str, bytes], ...] = (
                plan.type_header,
                (_ID, id_bytes),
                cid,
                saga_pair,
                plan.role_header,
                plan.service_header,
                self.produced_at,
                (_CAUSE, parent_id),
                plan.step_header,
            )
        else:
            # the child's span id is the id's last 16 hex digits: variant, clock and node
            if self.traces_valid or is_valid(trace):  # 55 ASCII bytes: 36 + 16 + 3
                child = _CHILD(trace, variant, clock, node, trace[52:])
            else:  # an invalid parent starts a new trace (W3C Trace Context)
                span = variant + clock + node
                child = b"00-%s-%s-01" % (os.urandom(16).hex().encode(), span)
            headers = (
                plan.type_header,
                (_ID, id_bytes),
                cid,
                saga_pair,
                plan.role_header,
                plan.service_header,
                self.produced_at,
                (_CAUSE, parent_id),
                plan.step_header,
                (_TRACE, child),
            )
        return _tuple_new(OutboxRecord, (event_id, plan.topic, cid[1], encode(event), headers))

    def _plan(
        self, route: Route, cls: type[Event], saga: str
    ) -> tuple[EmitPlan, Callable[[Event], bytes]]:
        """Return the plan and encoder of an event of ``cls`` in ``saga``, kept as ``route.last``.

        Raises :class:`~choreo.errors.HandlerError` for a class the handler did not declare.
        """
        plan = route.plan(cls, saga)
        encode = self.encoders.get(cls) or self._encoder(cls)
        route.last = (cls, saga, plan, encode)
        return plan, encode

    def _encoder(self, cls: type[Event]) -> Callable[[Event], bytes]:
        """Return (and remember) the function encoding events of ``cls``."""
        encode = self.encode if self.encoder_for is None else self.encoder_for(cls)
        self.encoders[cls] = encode
        return encode

    def emit(self, route: Route, fields: Fields, events: Sequence[Any]) -> list[OutboxRecord]:
        """Return the outbox records of a handler's emitted events (see :meth:`emit_one`).

        Raises :class:`~choreo.errors.HandlerError` for an event the handler did not declare
        or that is not an :class:`~choreo.model.events.Event`.
        """
        emit_one = self.emit_one
        return [emit_one(route, fields, event, index) for index, event in enumerate(events)]


def as_events(step_id: str, queued: list[Event], result: object) -> list[Event]:
    """Return ``queued`` plus a handler's sequence result, or raise TypeError if it is not one."""
    if isinstance(result, (list, tuple)):
        return [*queued, *result]
    if inspect.isawaitable(result):
        close_unawaited(result)
        raise TypeError(
            f"handler {step_id} returned an awaitable without being declared async: "
            "declare it with async def (the worker then awaits it), or return the events"
        )
    raise TypeError(
        f"handler {step_id} returned {type(result).__qualname__}; "
        "return an Event, a list of Events or None"
    )


def failure_event(route: Route, failure: BusinessFailure) -> Event:
    """Return the failure event a :class:`~choreo.errors.BusinessFailure` asks for.

    Raises :class:`~choreo.errors.HandlerError` when the event is not one the step
    declares in ``fails_with``, or when none is given and the step declares several.
    """
    spec = route.spec
    if failure.event is not None:
        event = failure.event
        if not isinstance(event, Event) or type(event) not in spec.fails_with:
            raise HandlerError(
                f"handler {spec.step_id} raised BusinessFailure({event!r}), which is not one "
                "of its declared fails_with events"
            )
        return event
    if len(spec.fails_with) != 1:
        raise HandlerError(
            f"handler {spec.step_id} raised BusinessFailure without an event but declares "
            f"{len(spec.fails_with)} fails_with events; pass the event"
        )
    return spec.fails_with[0](**failure.fields)
