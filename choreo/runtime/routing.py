"""The worker's precomputed dispatch table and its fast envelope reads and writes.

For every event type a service consumes, a :class:`Route` holds the handler, its retry
budget and logger; for every (emitted class, saga) pair it caches an :class:`EmitPlan`
(topic, role, step header, all pre-encoded), so handling a record costs dict lookups
instead of walking declarations. :func:`read_envelope` is a fast
:meth:`Envelope.from_headers` and :func:`scan_headers` reads and checks the envelope of
a record whose headers are in :meth:`Envelope.to_headers` order without building a dict.
:func:`derived_event_id` gives emitted events deterministic ids; the worker inlines the
same derivation (see ``Worker._encode``) and builds exactly the headers
:meth:`Envelope.to_headers` would for an event caused by the incoming one.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from choreo.choreography.service import HandlerSpec, Retry, Service
from choreo.errors import ConfigurationError, EnvelopeError, HandlerError
from choreo.model.envelope import Envelope, Header, Role
from choreo.model.events import Event, event_type_of
from choreo.model.topics import TopicNaming
from choreo.runtime.aio import EventLoops, awaiting
from choreo.runtime.retry import retry_for

__all__ = [
    "EVENT_ID_NAMESPACE",
    "EmitPlan",
    "Fields",
    "Route",
    "build_routes",
    "check_envelope",
    "derived_event_id",
    "fields_from",
    "read_envelope",
    "scan_headers",
]

EVENT_ID_NAMESPACE: Final = uuid.UUID("6f0c4d1e-8a51-5b3c-9d2e-2f6f3c0a7b14")
"""The UUID namespace of emitted event ids (see :func:`derived_event_id`)."""

_NAMESPACE_SHA1: Final = hashlib.sha1(EVENT_ID_NAMESPACE.bytes, usedforsecurity=False)
_VARIANT: Final[Mapping[str, str]] = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_ROLES: Final[Mapping[bytes, Role]] = {role.value.encode(): role for role in Role}
_SUFFIXES: Final = 4  # id suffixes "/<step>/<index>" precomputed per route
_MAX_PLANS: Final = 256  # emit plans cached per route (saga names come from the records)

_ET, _ID, _CID, _SAGA, _ROLE, _SERVICE, _AT, _CAUSE, _STEP, _TRACE = (
    Header.EVENT_TYPE,
    Header.EVENT_ID,
    Header.CORRELATION_ID,
    Header.SAGA,
    Header.ROLE,
    Header.SERVICE,
    Header.PRODUCED_AT,
    Header.CAUSATION_ID,
    Header.STEP,
    Header.TRACEPARENT,
)


_HEAD: Final = (_ET, _ID, _CID, _SAGA, _ROLE, _SERVICE, _AT)
_FULL: Final = (*_HEAD, _CAUSE, _STEP, _TRACE)
_START: Final = (*_HEAD, _STEP)
_isascii: Final = bytes.isascii

Fields = tuple[str, str, str, bytes | None, bytes, tuple[str, bytes], tuple[str, bytes]]
"""A checked envelope as the worker's hot path uses it (see :func:`scan_headers`).

Event type, event id, saga, traceparent (bytes or None), the event id as bytes, and the
(name, value) pairs of the correlation id and the saga (shared by the events it causes).
"""


def derived_event_id(parent_id: str, step_id: str, index: int) -> str:
    """Return the id of the ``index``-th event ``step_id`` emits while handling ``parent_id``.

    It equals ``str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{parent_id}/{step_id}/{index}"))``: a
    handler re-run after a crash re-emits the same ids, and downstream inboxes drop the
    copies.
    """
    return _uuid5(f"{parent_id}/{step_id}/{index}".encode())[0]


def _uuid5(name: bytes) -> tuple[str, str]:
    """Return ``str(uuid.uuid5(EVENT_ID_NAMESPACE, name))`` and its last 16 hex digits.

    SHA-1 of the namespace and ``name``, its first 16 bytes formatted directly with the
    version (5) and RFC 4122 variant bits set: what :func:`uuid.uuid5` computes, at a
    third of the cost. The 16 digits are the span id of the event's traceparent.
    """
    digest = _NAMESPACE_SHA1.copy()
    digest.update(name)
    h = digest.hexdigest()
    tail = _VARIANT[h[16]] + h[17:32]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{tail[:4]}-{h[20:32]}", tail


def scan_headers(  # noqa: PLR0911, PLR0912 - a bail-out per check, a branch per layout
    headers: Sequence[tuple[str, bytes]],
) -> Fields | None:
    """Return the checked envelope of record ``headers`` in the order ``to_headers`` writes.

    The fast path of :func:`check_envelope` for the layouts choreo itself writes (a
    caused event, or a start event with a step, with or without traceparent): the tuple is unpacked
    in place instead of copied into a dict. Returns None for any other layout and for an
    envelope that does not pass the checks; :func:`check_envelope` on the dict of the
    headers then gives the precise error (or the fields of an unusual but valid layout).
    """
    count = len(headers)
    try:
        if count == 10:
            (
                (n0, event_type),
                (n1, event_id),
                (n2, cid),
                (n3, saga),
                (n4, role),
                (n5, service),
                (n6, produced_at),
                (n7, cause),
                (n8, step),
                (n9, trace),
            ) = headers
            if (n0, n1, n2, n3, n4, n5, n6, n7, n8, n9) != _FULL:
                return None
            if not _isascii(cause):  # ASCII is UTF-8; only other bytes need the trial decode
                cause.decode()
        elif count == 9:
            (
                (n0, event_type),
                (n1, event_id),
                (n2, cid),
                (n3, saga),
                (n4, role),
                (n5, service),
                (n6, produced_at),
                (n7, seventh),
                (n8, step),
            ) = headers
            if (n0, n1, n2, n3, n4, n5, n6) != _HEAD:
                return None
            if n7 == _CAUSE and n8 == _STEP:  # a caused event without traceparent
                if not _isascii(seventh):
                    seventh.decode()
                trace = None
            elif n7 == _STEP and n8 == _TRACE:  # a start event with traceparent
                step, trace = seventh, step
            else:
                return None
        elif count == 8:  # a start event without traceparent (tracing off)
            (
                (n0, event_type),
                (n1, event_id),
                (n2, cid),
                (n3, saga),
                (n4, role),
                (n5, service),
                (n6, produced_at),
                (n7, step),
            ) = headers
            if (n0, n1, n2, n3, n4, n5, n6, n7) != _START:
                return None
            trace = None
        else:
            return None
        if role not in _ROLES or not produced_at.isdigit() or not event_id or not event_type:
            return None
        fields = (
            event_type.decode(),
            event_id.decode(),
            saga.decode(),
            trace,
            event_id,
            headers[2],
            headers[3],
        )
        # bytes.isascii: no string built, and a value that is not bytes raises TypeError
        if not (_isascii(cid) and _isascii(service) and _isascii(step)):
            cid.decode()
            service.decode()
            step.decode()
        if trace is not None and not _isascii(trace):
            trace.decode()
    except (ValueError, TypeError, AttributeError):
        return None
    return fields


def fields_from(headers: Mapping[str, bytes]) -> Fields:
    """Return the checked envelope of ``headers`` (any layout) as :data:`Fields`.

    Raises :class:`~choreo.errors.EnvelopeError` naming the missing or invalid header.
    """
    event_type, event_id, saga, _ = check_envelope(headers)
    return (
        event_type,
        event_id,
        saga,
        headers.get(_TRACE),
        headers[_ID],
        (_CID, headers[_CID]),
        (_SAGA, headers[_SAGA]),
    )


def check_envelope(headers: Mapping[str, bytes]) -> tuple[str, str, str, str | None]:
    """Validate the envelope in ``headers``; return its event type, event id, saga, traceparent.

    Checks what :func:`read_envelope` checks without building the :class:`Envelope` (the
    worker's hot path builds it only when a handler asks). Raises
    :class:`~choreo.errors.EnvelopeError` naming the missing or invalid header.
    """
    try:
        event_type = headers[_ET].decode()
        event_id = headers[_ID].decode()
        saga = headers[_SAGA].decode()
        headers[_CID].decode()
        headers[_SERVICE].decode()
        _ROLES[headers[_ROLE]]
        int(headers[_AT])
        trace = headers.get(_TRACE)
        cause = headers.get(_CAUSE)
        if cause is not None:
            cause.decode()
        step = headers.get(_STEP)
        if step is not None:
            step.decode()
    except (KeyError, ValueError, TypeError, AttributeError):
        read_envelope(headers)  # raises the precise EnvelopeError
        raise EnvelopeError("invalid envelope") from None  # pragma: no cover - defensive
    if not event_id:
        raise EnvelopeError(f"header {_ID!r} is empty")
    if not event_type:
        raise EnvelopeError(f"header {_ET!r} is empty")
    return event_type, event_id, saga, None if trace is None else trace.decode()


def read_envelope(headers: Mapping[str, bytes]) -> Envelope:
    """Return the envelope in ``headers`` (as :meth:`Envelope.from_headers`, but faster).

    Raises :class:`~choreo.errors.EnvelopeError` naming the missing or invalid header,
    and when the event id or event type is empty.
    """
    try:
        causation = headers.get(_CAUSE)
        step = headers.get(_STEP)
        trace = headers.get(_TRACE)
        envelope = Envelope(
            headers[_ET].decode(),
            headers[_ID].decode(),
            headers[_CID].decode(),
            headers[_SAGA].decode(),
            _ROLES[headers[_ROLE]],
            headers[_SERVICE].decode(),
            int(headers[_AT]),
            None if causation is None else causation.decode(),
            None if step is None else step.decode(),
            None if trace is None else trace.decode(),
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        envelope = Envelope.from_headers(headers)  # raises the precise EnvelopeError
    if not envelope.event_id:
        raise EnvelopeError(f"header {_ID!r} is empty")
    if not envelope.event_type:
        raise EnvelopeError(f"header {_ET!r} is empty")
    return envelope


@dataclass(frozen=True, slots=True)
class EmitPlan:
    """Where and how an event of one class emitted by one handler in one saga is published.

    The ``*_header`` fields are the constant (name, value) header pairs, built once.
    """

    event_type: str
    topic: str
    role: Role
    step: str
    type_header: tuple[str, bytes] = field(repr=False)
    role_header: tuple[str, bytes] = field(repr=False)
    service_header: tuple[str, bytes] = field(repr=False)
    step_header: tuple[str, bytes] = field(repr=False)


class Route:
    """The handler of one consumed event type, with its emit plans cached per saga."""

    __slots__ = (
        "allowed",
        "event_type",
        "func",
        "id_suffixes",
        "last",
        "logger",
        "naming",
        "plans",
        "read",
        "retry",
        "service",
        "spec",
        "step_id",
        "takes_context",
    )

    def __init__(
        self,
        service: Service,
        spec: HandlerSpec,
        event_type: str,
        *,
        naming: TopicNaming,
        retry: Retry,
        loops: EventLoops | None = None,
    ) -> None:
        self.service = service
        self.spec = spec
        self.func = spec.func
        if spec.is_async:  # the worker awaits it on its thread's event loop
            if loops is None:
                raise ConfigurationError(
                    f"handler {spec.step_id} is async: its route needs the worker's EventLoops"
                )
            self.func = awaiting(spec.func, loops)
        self.takes_context = spec.takes_context
        self.step_id = spec.step_id
        self.event_type = event_type
        self.naming = naming
        self.retry = retry
        self.logger = logging.getLogger(f"choreo.handler.{service.name}")
        self.allowed: frozenset[type[Event]] = frozenset((*spec.emits, *spec.fails_with))
        self.plans: dict[tuple[type[Event], str], EmitPlan] = {}
        # the emitter's last plan, with its class, saga and encoder (one tuple: a thread
        # sees all four of the same plan); the emitter checks it before building the
        # plans' key (no class matches None, so the placeholders are never used)
        self.last: tuple[type[Event] | None, str, EmitPlan, Callable[[Event], bytes]] = (
            None,
            "",
            cast("EmitPlan", None),
            cast("Callable[[Event], bytes]", None),
        )
        self.id_suffixes = [f"/{self.step_id}/{index}".encode() for index in range(_SUFFIXES)]
        self.read: Callable[[bytes], Event] | None = None
        """The function decoding this route's payloads, set by the dispatcher at first use."""

    def id_suffix(self, index: int) -> bytes:
        """Return ``/<step id>/<index>``: what follows the parent id in an emitted id's name."""
        suffixes = self.id_suffixes
        return suffixes[index] if index < len(suffixes) else f"/{self.step_id}/{index}".encode()

    def plan(self, cls: type[Event], saga: str) -> EmitPlan:
        """Return (and cache) the plan of an event of ``cls`` emitted in saga ``saga``.

        At most ``_MAX_PLANS`` plans are cached: ``saga`` is the incoming record's saga
        header, so records naming ever new sagas must not grow the cache per record.
        Raises :class:`~choreo.errors.HandlerError` when the handler did not declare ``cls``.
        """
        key = (cls, saga)
        found = self.plans.get(key)
        if found is not None:
            return found
        if cls not in self.allowed:
            declared = ", ".join(sorted(self.spec.emitted_types)) or "nothing"
            raise HandlerError(
                f"handler {self.spec.step_id} emitted {cls.__qualname__}, which it does not "
                f"declare (it declares {declared})"
            )
        event_type = event_type_of(cls)
        role = self.service.role_of(self.spec, event_type, saga)
        step = self.service.step_header(self.spec, role, event_type)
        found = EmitPlan(
            event_type=event_type,
            topic=self.naming(event_type),
            role=role,
            step=step,
            type_header=(_ET, event_type.encode()),
            role_header=(_ROLE, role.value.encode()),
            service_header=(_SERVICE, self.service.name.encode()),
            step_header=(_STEP, step.encode()),
        )
        if len(self.plans) < _MAX_PLANS:
            self.plans[key] = found
        return found


def build_routes(
    service: Service,
    *,
    naming: TopicNaming,
    default: Retry,
    compensation: Retry,
    loops: EventLoops | None = None,
) -> dict[str, Route]:
    """Return the route of every event type ``service`` consumes.

    ``loops`` runs the ``async def`` handlers (required when the service has any).
    """
    routes: dict[str, Route] = {}
    for event_type in service.consumed_types:
        spec = service.handler_for(event_type)
        if spec is None:  # pragma: no cover - consumed_types come from the handlers
            continue
        routes[event_type] = Route(
            service,
            spec,
            event_type,
            naming=naming,
            retry=retry_for(spec, default, compensation),
            loops=loops,
        )
    return routes
