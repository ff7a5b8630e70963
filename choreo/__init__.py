"""choreo: choreographed sagas over Apache Kafka.

Declare services and their handlers with decorators (:class:`Service`, :class:`Saga`),
exchange Avro events with a standard framing, and see every saga's state rebuilt from
the event log alone.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from choreo._version import __version__
from choreo.choreography.service import HandlerSpec, Retry, Saga, Service, StepKind
from choreo.errors import (
    BusinessFailure,
    ChoreoError,
    ChoreographyError,
    ConfigurationError,
    DecodeError,
    SchemaError,
    TransientError,
)
from choreo.model.context import Context
from choreo.model.envelope import Envelope, Header, Role
from choreo.model.events import Event, SagaTimedOut, event_type_of

if TYPE_CHECKING:
    from choreo.app import App, AppRun
    from choreo.avro import load_directory
    from choreo.avro.codec import SingleObjectCodec
    from choreo.avro.serde import EventSerde
    from choreo.choreography.checks import Problem, check
    from choreo.choreography.graph import Choreography
    from choreo.runtime import MemoryInbox, Publisher, SqliteInbox, Worker, WorkerConfig
    from choreo.store import MemoryStore, SqliteStore, Store, open_store
    from choreo.store.postgres import PostgresStore
    from choreo.testing import SagaTestKit
    from choreo.tracker import SagaQuery, SagaState, SagaStatus, SagaTrace, Tracker
    from choreo.transports import KafkaConfig, MemoryBus, open_transport

# The rest of the public API loads on first use, so ``import choreo`` stays light.
_LAZY = {
    "App": "choreo.app",
    "AppRun": "choreo.app",
    "Choreography": "choreo.choreography.graph",
    "EventSerde": "choreo.avro.serde",
    "KafkaConfig": "choreo.transports",
    "MemoryBus": "choreo.transports",
    "MemoryInbox": "choreo.runtime",
    "MemoryStore": "choreo.store",
    "PostgresStore": "choreo.store.postgres",  # needs the optional psycopg packages
    "Problem": "choreo.choreography.checks",
    "Publisher": "choreo.runtime",
    "SagaQuery": "choreo.tracker",
    "SagaState": "choreo.tracker",
    "SagaStatus": "choreo.tracker",
    "SagaTestKit": "choreo.testing",
    "SagaTrace": "choreo.tracker",
    "SingleObjectCodec": "choreo.avro.codec",
    "SqliteInbox": "choreo.runtime",
    "SqliteStore": "choreo.store",
    "Store": "choreo.store",
    "Tracker": "choreo.tracker",
    "Worker": "choreo.runtime",
    "WorkerConfig": "choreo.runtime",
    "check": "choreo.choreography.checks",
    "load_directory": "choreo.avro",
    "open_store": "choreo.store",
    "open_transport": "choreo.transports",
}


def __getattr__(name: str) -> Any:
    """Import a lazily exported name on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'choreo' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "App",
    "AppRun",
    "BusinessFailure",
    "ChoreoError",
    "Choreography",
    "ChoreographyError",
    "ConfigurationError",
    "Context",
    "DecodeError",
    "Envelope",
    "Event",
    "EventSerde",
    "HandlerSpec",
    "Header",
    "KafkaConfig",
    "MemoryBus",
    "MemoryInbox",
    "MemoryStore",
    "PostgresStore",
    "Problem",
    "Publisher",
    "Retry",
    "Role",
    "Saga",
    "SagaQuery",
    "SagaState",
    "SagaStatus",
    "SagaTestKit",
    "SagaTimedOut",
    "SagaTrace",
    "SchemaError",
    "Service",
    "SingleObjectCodec",
    "SqliteInbox",
    "SqliteStore",
    "StepKind",
    "Store",
    "Tracker",
    "TransientError",
    "Worker",
    "WorkerConfig",
    "__version__",
    "check",
    "event_type_of",
    "load_directory",
    "open_store",
    "open_transport",
]
