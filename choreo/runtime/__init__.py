"""The runtime: the worker loop that runs a service, and what it is built from.

:class:`Worker` polls a batch, decodes, deduplicates through an :class:`Inbox`, dispatches
to the service's handlers, stores the emitted events in the transactional outbox,
publishes them and commits (see :mod:`choreo.runtime.worker`). :class:`Publisher` starts
sagas from outside handlers through the same outbox. A :class:`Delivery` strategy
(:class:`AtLeastOnce`, :class:`Transactional`) decides how output and offsets are
committed; :class:`Middleware` hooks around the worker's steps.
"""

from choreo.model.topics import (
    DEADLETTER_TOPIC,
    DeadLetterNaming,
    TopicNaming,
    deadletter_topic,
    shared_topic,
    topic_for,
    topic_per_namespace,
)
from choreo.runtime.config import WorkerConfig
from choreo.runtime.deadletter import DeadLetter, DeadLetterReason
from choreo.runtime.delivery import AtLeastOnce, Delivery, Transactional
from choreo.runtime.middleware import EventInfo, LoggingMiddleware, Middleware, Outcome
from choreo.runtime.publisher import Publisher, SagaStarter
from choreo.runtime.retry import COMPENSATION_RETRY, DEFAULT_RETRY
from choreo.runtime.routing import derived_event_id
from choreo.runtime.serdes import event_classes, serde_for
from choreo.runtime.worker import Serde, Worker
from choreo.store import Inbox, MemoryInbox, SqliteInbox
from choreo.store.outbox import OutboxRecord

__all__ = [
    "COMPENSATION_RETRY",
    "DEADLETTER_TOPIC",
    "DEFAULT_RETRY",
    "AtLeastOnce",
    "DeadLetter",
    "DeadLetterNaming",
    "DeadLetterReason",
    "Delivery",
    "EventInfo",
    "Inbox",
    "LoggingMiddleware",
    "MemoryInbox",
    "Middleware",
    "OutboxRecord",
    "Outcome",
    "Publisher",
    "SagaStarter",
    "Serde",
    "SqliteInbox",
    "TopicNaming",
    "Transactional",
    "Worker",
    "WorkerConfig",
    "deadletter_topic",
    "derived_event_id",
    "event_classes",
    "serde_for",
    "shared_topic",
    "topic_for",
    "topic_per_namespace",
]
