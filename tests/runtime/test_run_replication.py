"""The replication of the topics ``choreo run`` creates: asked for, checked, or refused clearly.

``--replication-factor`` / ``$CHOREO_TOPIC_REPLICATION_FACTOR`` and
``--min-insync-replicas`` / ``$CHOREO_TOPIC_MIN_INSYNC_REPLICAS``. On the session's
single real broker a factor of 1 (with ``min.insync.replicas`` 1) is what the created
topics get; a factor of 3 stops the worker before any topic exists, with one line saying
how many brokers the cluster has; both Kafka transports check the same way.
"""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, ConfigResource

from choreo.cli.run_cmd import run
from choreo.errors import ConfigurationError
from choreo.runtime import WorkerConfig
from choreo.runtime.config import topic_replication
from choreo.transports.factory import open_transport

from .fixtures.run_process import APP, RunProcess
from .fixtures.shop import SCHEMAS_DIR
from .test_run_options import _inventory_args


def _topics(bootstrap: str, prefix: str) -> dict[str, tuple[int, str]]:
    """Return ``{topic: (replicas of partition 0, min.insync.replicas)}`` of ``prefix``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10)
    names = sorted(name for name in metadata.topics if name.startswith(prefix))
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    configs = {
        resource.name: future.result(10)
        for resource, future in admin.describe_configs(resources).items()
    }
    return {
        name: (
            len(metadata.topics[name].partitions[0].replicas),
            configs[name]["min.insync.replicas"].value,
        )
        for name in names
    }


@pytest.mark.kafka
def test_a_replication_the_cluster_can_hold_is_what_the_created_topics_get(
    kafka_bootstrap: str,
) -> None:
    """--replication-factor 1 --min-insync-replicas 1: every created topic has both."""
    prefix = f"repl{uuid.uuid4().hex[:8]}."
    args = _inventory_args(
        kafka_bootstrap, prefix, "--replication-factor", "1", "--min-insync-replicas", "1"
    )
    process = RunProcess(*args)
    try:
        process.wait_for("worker started")
    finally:
        code = process.terminate()
    assert code == 0, process.output
    created = _topics(kafka_bootstrap, prefix)
    assert len(created) >= 3, created  # its input, its outputs and its dead-letter topic
    assert set(created.values()) == {(1, "1")}, created


@pytest.mark.kafka
def test_more_replicas_than_brokers_stops_the_worker_with_one_clear_line(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$CHOREO_TOPIC_REPLICATION_FACTOR=3 on one broker: exit 1, the reason, no topic created."""
    prefix = f"repl{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("CHOREO_TOPIC_REPLICATION_FACTOR", "3")
    process = RunProcess(*_inventory_args(kafka_bootstrap, prefix))
    code = process.popen.wait(60)
    process.reader.join(5)
    assert code == 1, process.output
    errors = [line for line in process.output.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: replication factor 3 needs at least 3 brokers, and the cluster has 1 live: "
        "give --replication-factor 1 or less (CHOREO_TOPIC_REPLICATION_FACTOR), or add "
        "brokers; no topic was created"
    ], process.output
    assert "Traceback" not in process.output
    assert _topics(kafka_bootstrap, prefix) == {}


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_both_kafka_transports_check_the_brokers_before_creating(
    kafka_bootstrap: str, kind: str
) -> None:
    """Too many replicas or in-sync replicas: ConfigurationError, nothing created; 1 works."""
    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    prefix = f"repl{uuid.uuid4().hex[:8]}."
    try:
        with pytest.raises(ConfigurationError, match="needs at least 2 brokers"):
            transport.create_topics([f"{prefix}a"], partitions=2, replication_factor=2)
        with pytest.raises(ConfigurationError, match=r"min\.insync\.replicas 2 needs at least 2"):
            transport.create_topics([f"{prefix}a"], min_insync_replicas=2)
        assert _topics(kafka_bootstrap, prefix) == {}
        transport.create_topics(
            [f"{prefix}a", f"{prefix}b"], replication_factor=1, min_insync_replicas=1
        )
        assert _topics(kafka_bootstrap, prefix) == {f"{prefix}a": (1, "1"), f"{prefix}b": (1, "1")}
    finally:
        transport.close()


def test_replication_out_of_bounds_is_refused_before_anything_runs() -> None:
    """A factor of 0, and more in-sync replicas than replicas, are refused with the bounds."""
    args = [f"{APP}:inventory", "--transport", "memory", "--schemas", str(SCHEMAS_DIR)]
    zero = CliRunner().invoke(run, [*args, "--replication-factor", "0"])
    assert zero.exit_code == 2
    assert "0 is not in the range 1<=x<=32767" in zero.output

    too_many = CliRunner().invoke(
        run, [*args, "--replication-factor", "2", "--min-insync-replicas", "3"]
    )
    assert too_many.exit_code == 1
    assert "min.insync.replicas 3 is larger than the replication factor 2" in too_many.output

    with pytest.raises(ConfigurationError, match="out of range"):
        WorkerConfig(topic_replication_factor=40_000)
    with pytest.raises(ConfigurationError, match="must be at least 1"):
        WorkerConfig(topic_min_insync_replicas=0)
    asked = WorkerConfig(topic_replication_factor=3, topic_min_insync_replicas=2)
    assert topic_replication(asked) == {"replication_factor": 3, "min_insync_replicas": 2}
    assert topic_replication(WorkerConfig()) == {}  # the cluster's defaults: nothing passed


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_existing_topics_never_stop_a_start_on_a_cluster_with_brokers_down(
    kafka_bootstrap: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every topic there, RF 2 asked of a cluster with one live broker (a 3-broker cluster
    with RF 3 and a broker down for a rolling restart looks the same): nothing to create,
    so no refusal, one WARNING per topic saying it has less; a missing topic is still
    refused before anything is created. (Before, every restart was refused until the
    broker came back.)"""
    import logging

    from choreo.transports.admin import create_compacted_topic

    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    prefix = f"repl{uuid.uuid4().hex[:8]}."
    names = [f"{prefix}a", f"{prefix}b"]
    try:
        transport.create_topics(names, replication_factor=1)
        caplog.set_level(logging.WARNING, logger="choreo.transports")
        transport.create_topics(names, replication_factor=2)
        short = [r.getMessage() for r in caplog.records if "already exists" in r.getMessage()]
        assert len(short) == 2, short
        assert all("replication factor 1" in line for line in short)
        if kind == "confluent":  # the tracker's summary topic, existing: the same
            caplog.clear()
            create_compacted_topic(transport, names[0], partitions=1, replication_factor=2)
            assert any("already exists" in r.getMessage() for r in caplog.records)
        with pytest.raises(ConfigurationError, match="needs at least 2 brokers"):
            transport.create_topics([*names, f"{prefix}c"], replication_factor=2)
        assert sorted(_topics(kafka_bootstrap, prefix)) == names
    finally:
        transport.close()
