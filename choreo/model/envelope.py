"""The event envelope: the ids and roles carried in a Kafka record's key and headers.

One Kafka record is one event:

- **key**: the saga's correlation id, so a saga's events keep their order in a partition;
- **value**: the Avro-encoded payload (see :mod:`choreo.avro.codec`);
- **headers**: the fields of :class:`Envelope`, each under one prefix (``choreo-``), UTF-8
  encoded, plus the W3C ``traceparent`` when tracing is on.

The envelope is deliberately independent of Avro: the tracker can rebuild sagas from the
headers alone, without importing the services' code or decoding a payload.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from choreo.errors import EnvelopeError

__all__ = [
    "HEADER_PREFIX",
    "Envelope",
    "Header",
    "Role",
    "headers_to_dict",
    "new_event_id",
    "now_ms",
]

HEADER_PREFIX = "choreo-"


class Header:
    """Names of the record headers choreo writes and reads."""

    EVENT_TYPE = HEADER_PREFIX + "type"
    EVENT_ID = HEADER_PREFIX + "id"
    CORRELATION_ID = HEADER_PREFIX + "correlation-id"
    CAUSATION_ID = HEADER_PREFIX + "causation-id"
    SAGA = HEADER_PREFIX + "saga"
    ROLE = HEADER_PREFIX + "role"
    STEP = HEADER_PREFIX + "step"
    SERVICE = HEADER_PREFIX + "service"
    PRODUCED_AT = HEADER_PREFIX + "produced-at"
    TRACEPARENT = "traceparent"

    # dead-letter headers, added to the original record's headers
    DLQ_REASON = HEADER_PREFIX + "dlq-reason"
    DLQ_ERROR_CLASS = HEADER_PREFIX + "dlq-error-class"
    DLQ_SOURCE_TOPIC = HEADER_PREFIX + "dlq-source-topic"
    DLQ_SOURCE_PARTITION = HEADER_PREFIX + "dlq-source-partition"
    DLQ_SOURCE_OFFSET = HEADER_PREFIX + "dlq-source-offset"
    DLQ_SERVICE = HEADER_PREFIX + "dlq-service"
    DLQ_FAILED_AT = HEADER_PREFIX + "dlq-failed-at"
    DLQ_ATTEMPTS = HEADER_PREFIX + "dlq-attempts"

    # a human is needed: compensation budget exhausted (sent with the failed event)
    NEEDS_HUMAN = HEADER_PREFIX + "needs-human"


class Role(enum.StrEnum):
    """What an event means for its saga; the tracker folds a saga's state from these alone."""

    START = "start"
    """Opens a saga."""
    STEP = "step"
    """A forward step succeeded."""
    FAILURE = "failure"
    """A step failed; compensation begins."""
    COMPENSATION = "compensation"
    """A completed step was undone."""
    COMPLETED = "completed"
    """Terminal: every step succeeded."""
    FAILED = "failed"
    """Terminal: the saga failed and its completed steps were compensated."""
    NOTICE = "notice"
    """Informs (e.g. a notification was sent) without moving the saga; any time, even after
    a terminal event. Emitted by listeners."""
    COMMAND = "command"
    """An orchestrator asks a participant to run a forward step (orchestrated sagas)."""
    COMPENSATE = "compensate"
    """An orchestrator asks a participant to undo a completed step; compensation begins."""


def new_event_id() -> str:
    """Return a fresh event id (a random UUID in its canonical text form)."""
    return str(uuid.uuid4())


def now_ms() -> int:
    """Return the wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def headers_to_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Return record headers as a dict (the last value wins for a repeated key)."""
    if not headers:
        return {}
    return {k: v for k, v in headers if v is not None}


@dataclass(frozen=True, slots=True)
class Envelope:
    """The metadata of one event: who, what, which saga, and what caused it.

    ``step`` names the step (``service.handler``) that produced a ``step`` or ``failure``
    event, or the step that a ``compensation`` event undid; the tracker uses it to check
    the saga guarantee without the services' code.
    """

    event_type: str
    event_id: str
    correlation_id: str
    saga: str
    role: Role
    service: str
    produced_at_ms: int
    causation_id: str | None = None
    step: str | None = None
    traceparent: str | None = None

    @classmethod
    def start(
        cls,
        event_type: str,
        *,
        saga: str,
        service: str,
        correlation_id: str | None = None,
        step: str | None = None,
        traceparent: str | None = None,
        produced_at_ms: int | None = None,
    ) -> Envelope:
        """Return the envelope of an event that opens a new saga (produced now by default)."""
        event_id = new_event_id()
        return cls(
            event_type=event_type,
            event_id=event_id,
            correlation_id=correlation_id or event_id,
            saga=saga,
            role=Role.START,
            service=service,
            produced_at_ms=now_ms() if produced_at_ms is None else produced_at_ms,
            causation_id=None,
            step=step,
            traceparent=traceparent,
        )

    def caused(
        self,
        event_type: str,
        *,
        role: Role,
        service: str,
        step: str | None = None,
    ) -> Envelope:
        """Return the envelope of an event caused by this one.

        Correlation id, saga and trace context propagate; the causation id is this
        event's id. This is how a handler's emitted events inherit their ids.
        """
        return replace(
            self,
            event_type=event_type,
            event_id=new_event_id(),
            causation_id=self.event_id,
            role=role,
            service=service,
            step=step,
            produced_at_ms=now_ms(),
        )

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Return the record headers that carry this envelope."""
        headers = [
            (Header.EVENT_TYPE, self.event_type.encode()),
            (Header.EVENT_ID, self.event_id.encode()),
            (Header.CORRELATION_ID, self.correlation_id.encode()),
            (Header.SAGA, self.saga.encode()),
            (Header.ROLE, self.role.value.encode()),
            (Header.SERVICE, self.service.encode()),
            (Header.PRODUCED_AT, str(self.produced_at_ms).encode()),
        ]
        if self.causation_id is not None:
            headers.append((Header.CAUSATION_ID, self.causation_id.encode()))
        if self.step is not None:
            headers.append((Header.STEP, self.step.encode()))
        if self.traceparent is not None:
            headers.append((Header.TRACEPARENT, self.traceparent.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, bytes]) -> Envelope:
        """Return the envelope carried by record headers.

        Raises :class:`~choreo.errors.EnvelopeError` naming the missing or invalid header.
        """

        def text(name: str, *, required: bool = True) -> str | None:
            raw = headers.get(name)
            if raw is None:
                if required:
                    raise EnvelopeError(f"missing header {name!r}")
                return None
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EnvelopeError(f"header {name!r} is not UTF-8") from exc

        role_text = text(Header.ROLE) or ""
        try:
            role = Role(role_text)
        except ValueError as exc:
            raise EnvelopeError(f"header {Header.ROLE!r} has unknown role {role_text!r}") from exc
        produced = text(Header.PRODUCED_AT)
        try:
            produced_at_ms = int(produced or "")
        except ValueError as exc:
            raise EnvelopeError(
                f"header {Header.PRODUCED_AT!r} is not an integer: {produced!r}"
            ) from exc
        return cls(
            event_type=text(Header.EVENT_TYPE) or "",
            event_id=text(Header.EVENT_ID) or "",
            correlation_id=text(Header.CORRELATION_ID) or "",
            saga=text(Header.SAGA) or "",
            role=role,
            service=text(Header.SERVICE) or "",
            produced_at_ms=produced_at_ms,
            causation_id=text(Header.CAUSATION_ID, required=False),
            step=text(Header.STEP, required=False),
            traceparent=text(Header.TRACEPARENT, required=False),
        )
