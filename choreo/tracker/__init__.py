"""The correlation-id tracker: rebuild every saga's state from the event log alone.

:class:`Tracker` folds records into :class:`SagaTrace` objects (see :mod:`.fold` for the
states and the saga-guarantee checks) and answers :class:`SagaQuery` pages from its saga
index (:mod:`.index`); :class:`LiveTracker` feeds it from a transport;
:class:`TimeoutService` turns overdue sagas into ``choreo.SagaTimedOut`` failures;
:func:`read_container_file` / :func:`write_container_file` read and write exported logs;
:func:`verify_records` checks a whole log. :class:`TrackerGroupMember` is one tracker
instance of a group that materializes saga summaries to a compacted topic
(:mod:`choreo.tracker.group`), which any tracker can load
(:meth:`Tracker.load_summaries`) instead of folding the log.
"""

from choreo.tracker.fold import TIMEOUT_EVENT_TYPE, Code, causal_order, fold
from choreo.tracker.graphfacts import GraphFacts, facts_from
from choreo.tracker.group import TrackerGroupMember
from choreo.tracker.live import LiveTracker, read_topics
from choreo.tracker.model import SagaState, SagaStatus, SagaTrace, TraceEvent, Violation
from choreo.tracker.query import SagaQuery
from choreo.tracker.sources import read_container_file, write_container_file
from choreo.tracker.store import CheckpointStore
from choreo.tracker.timeouts import TimeoutService
from choreo.tracker.tracker import Tracker, TrackerStats
from choreo.tracker.verify import Finding, VerifyReport, verify_records, verify_tracker

__all__ = [
    "TIMEOUT_EVENT_TYPE",
    "CheckpointStore",
    "Code",
    "Finding",
    "GraphFacts",
    "LiveTracker",
    "SagaQuery",
    "SagaState",
    "SagaStatus",
    "SagaTrace",
    "TimeoutService",
    "TraceEvent",
    "Tracker",
    "TrackerGroupMember",
    "TrackerStats",
    "VerifyReport",
    "Violation",
    "causal_order",
    "facts_from",
    "fold",
    "read_container_file",
    "read_topics",
    "verify_records",
    "verify_tracker",
    "write_container_file",
]
