"""choreo: choreographed sagas over Apache Kafka.

Declare services and their handlers with decorators (:class:`Service`, :class:`Saga`),
exchange Avro events with a standard framing, and see every saga's state rebuilt from
the event log alone.
"""

from choreo._version import __version__
from choreo.context import Context
from choreo.envelope import Envelope, Header, Role
from choreo.errors import (
    BusinessFailure,
    ChoreoError,
    ConfigurationError,
    DecodeError,
    TransientError,
)
from choreo.events import Event, SagaTimedOut, event_type_of
from choreo.service import HandlerSpec, Retry, Saga, Service, StepKind

__all__ = [
    "BusinessFailure",
    "ChoreoError",
    "ConfigurationError",
    "Context",
    "DecodeError",
    "Envelope",
    "Event",
    "HandlerSpec",
    "Header",
    "Retry",
    "Role",
    "Saga",
    "SagaTimedOut",
    "Service",
    "StepKind",
    "TransientError",
    "__version__",
    "event_type_of",
]
