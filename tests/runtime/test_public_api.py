"""The runtime's and the testing module's public names are pinned."""

from __future__ import annotations

import choreo.runtime
import choreo.testing


def test_runtime_exports_exactly_its_public_api() -> None:
    """choreo.runtime exports the worker, its config, stores, delivery, middleware, helpers."""
    assert sorted(choreo.runtime.__all__) == [
        "AtLeastOnce",
        "COMPENSATION_RETRY",
        "DEADLETTER_TOPIC",
        "DEFAULT_RETRY",
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
    for name in choreo.runtime.__all__:
        assert getattr(choreo.runtime, name) is not None


def test_testing_exports_the_kit_and_its_records() -> None:
    """choreo.testing exports SagaTestKit and the records it returns."""
    assert sorted(choreo.testing.__all__) == ["PublishedRecord", "SagaEvent", "SagaTestKit"]
    assert "SagaTestKit(" in (choreo.testing.__doc__ or "")
