"""The names ``choreo`` exports are a promise: this pins them."""

from __future__ import annotations

import subprocess
import sys

import pytest

import choreo

EXPECTED = {
    "BusinessFailure", "ChoreoError", "Choreography", "ChoreographyError",
    "ConfigurationError", "Context", "DecodeError", "Envelope", "Event", "EventSerde",
    "HandlerSpec", "Header", "KafkaConfig", "MemoryBus", "MemoryInbox", "Problem",
    "Publisher", "Retry", "Role", "Saga", "SagaQuery", "SagaStatus", "SagaTestKit",
    "SagaTimedOut", "SagaTrace", "SchemaError", "Service", "SingleObjectCodec",
    "SqliteInbox", "StepKind", "Tracker", "TransientError", "Worker", "WorkerConfig",
    "__version__", "check", "event_type_of", "load_directory", "open_transport",
    "Store", "MemoryStore", "SqliteStore", "PostgresStore", "open_store", "SagaState",
    "App", "AppRun",
}  # fmt: skip


def test_all_is_pinned() -> None:
    """``choreo.__all__`` lists exactly the promised names."""
    assert set(choreo.__all__) == EXPECTED
    assert len(choreo.__all__) == len(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_exported_name_resolves(name: str) -> None:
    """Every exported name, eager or lazy, resolves to a real object."""
    assert getattr(choreo, name) is not None


def test_unknown_attribute_raises_attribute_error() -> None:
    """A name choreo does not export raises AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = choreo.no_such_name  # type: ignore[attr-defined]


def test_import_choreo_loads_no_kafka_client() -> None:
    """``import choreo`` stays light: no Kafka client and no runtime load until used."""
    code = (
        "import sys, choreo; "
        "print(any(m.split('.')[0] in ('confluent_kafka', 'kafka') for m in sys.modules), "
        "'choreo.runtime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
