"""One hierarchy for every error choreo raises.

Client libraries' exceptions (confluent-kafka, kafka-python, fastavro) are translated into
these at the module that touches the client, so callers never import a client to catch
an error.
"""

from __future__ import annotations


class ChoreoError(Exception):
    """Base class of every error raised by choreo; its text never shows a secret.

    ``str()`` passes the message through :func:`choreo.safety.redact.redact_text`, so a
    password, key or token that a client library put into an error message is masked.
    """

    def __str__(self) -> str:
        """Return the message with secrets masked."""
        from choreo.safety.redact import redact_text

        return redact_text(super().__str__())


# --- configuration and declarations -------------------------------------------------


class ConfigurationError(ChoreoError):
    """A setting or a declaration is invalid; raised at start-up, never mid-stream."""


class ChoreographyError(ConfigurationError):
    """The declared choreography is inconsistent (see :func:`choreo.choreography.checks.check`)."""


# --- schemas and events ------------------------------------------------------------


class SchemaError(ChoreoError):
    """A schema file or a schema directory is broken or unsafe."""


class IncompatibleSchemaError(SchemaError):
    """Two versions of a schema break the chosen compatibility mode."""


class UnknownEventError(ChoreoError):
    """An event type, schema name or fingerprint is not known to the registry."""


class DecodeError(ChoreoError):
    """Bytes could not be decoded into an event; ``raw`` keeps the offending bytes."""

    def __init__(self, message: str, raw: bytes | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class EncodeError(ChoreoError):
    """A payload does not match the schema it is encoded with."""


class EnvelopeError(DecodeError):
    """A record lacks a required choreo header or carries an invalid one."""


# --- transports ----------------------------------------------------------------------


class TransportError(ChoreoError):
    """A Kafka client (or the memory bus) reported an error.

    ``retriable`` is True when trying again may succeed; ``fatal`` when it never will
    (authentication or authorization refused, a fenced producer): a worker stops on it.
    """

    retriable: bool = False
    fatal: bool = False

    def __init__(self, message: str, *, retriable: bool = False, fatal: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.fatal = fatal


class DeliveryError(TransportError):
    """One or more published records were not acknowledged by the broker."""


class CommitError(TransportError):
    """Consumer offsets could not be committed."""


class TransactionError(TransportError):
    """A Kafka transaction could not be begun, committed or aborted.

    ``abortable`` is True when the transaction may be aborted and retried,
    ``fatal`` when the producer must be recreated. ``hung`` (fatal too) when the client
    never returned from the call (librdkafka while a coordinator is unreachable) and was
    abandoned: a new producer with the same transactional id fences it and aborts its
    transaction, whereas another fatal error (fenced by a newer producer, refused
    authorization) is not cured by a new producer.
    """

    def __init__(
        self,
        message: str,
        *,
        retriable: bool = False,
        abortable: bool = False,
        fatal: bool = False,
        hung: bool = False,
    ) -> None:
        super().__init__(message, retriable=retriable, fatal=fatal or hung)
        self.abortable = abortable
        self.hung = hung


class FatalError(ChoreoError):
    """The worker met an error retrying cannot fix and stopped (``choreo run`` exits non-zero).

    The message says why: a fenced producer (another live process uses the same
    transactional id), refused authentication or authorization, or a configuration error.
    """


class TransportClosedError(TransportError):
    """The producer or consumer was used after close()."""


# --- handling ------------------------------------------------------------------------


class HandlerError(ChoreoError):
    """A handler raised; wraps the original exception as ``__cause__``."""


class TransientError(ChoreoError):
    """Raise from a handler to ask for a retry with backoff (e.g. a database timeout)."""


class BusinessFailure(ChoreoError):  # noqa: N818 - a failure outcome, not an error of choreo's
    """Raise from a step handler to emit its declared failure event and start compensation.

    ``event`` is the failure event to emit; when None the runtime uses the step's only
    declared failure event type, built from ``fields``.
    """

    def __init__(self, event: object | None = None, **fields: object) -> None:
        super().__init__(
            f"business failure: {event!r}" if event is not None else "business failure"
        )
        self.event = event
        self.fields = fields


class RetriesExhaustedError(ChoreoError):
    """A handler kept failing after its retry budget; the record goes to the dead-letter topic."""
