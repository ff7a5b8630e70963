"""On a three-broker cluster: topics get the replication asked, short existing ones a warning.

The cluster's defaults are replication factor 3 and ``min.insync.replicas`` 2
(``scripts/kafka/cluster.properties``). A topic made beforehand with one replica and
``min.insync.replicas`` 1 stands for a topic created before the operator asked for more:
``create_topics`` (both Kafka transports) and ``choreo run`` leave it as it is and say so
in one WARNING naming what it has, what was asked and the commands that fix it; the
topics they create get what was asked. The tracker group's summary topic follows
``--replication-factor`` / ``$CHOREO_TOPIC_REPLICATION_FACTOR`` like the services' topics
(a factor of 2 here, not the cluster's default 3).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from choreo.transports.factory import open_transport
from tests.runtime.fixtures.run_process import RunProcess
from tests.runtime.test_run_options import _inventory_args
from tests.tracker.test_group_replication_kafka import summary_member
from tests.transports.topic_settings import topic_settings

from .test_kafka_cluster import load_cluster_module

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A three-node KRaft cluster for this module's tests."""
    made = load_cluster_module().KafkaCluster()
    try:
        made.start()
        yield made
    finally:
        made.stop()


def _short_topic(bootstrap: str, name: str) -> None:
    """Create ``name`` with one replica and min.insync.replicas 1 (below the cluster default)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(
        name, num_partitions=2, replication_factor=1, config={"min.insync.replicas": "1"}
    )
    admin.create_topics([new])[name].result(30)
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _shortfall_lines(text: str, topic: str) -> list[str]:
    return [line for line in text.splitlines() if f"topic '{topic}' already exists" in line]


@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_create_topics_warns_once_per_short_existing_topic(
    cluster: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RF 3 / min.insync 2 asked: the RF-1 topic draws one warning, the new one gets 3 / 2."""
    prefix = f"short{uuid.uuid4().hex[:8]}."
    short, fresh = f"{prefix}short", f"{prefix}fresh"
    _short_topic(cluster.bootstrap, short)
    transport = open_transport(kind, bootstrap=cluster.bootstrap)
    caplog.set_level(logging.WARNING, logger="choreo.transports")
    try:
        transport.create_topics(
            [short, fresh], partitions=2, replication_factor=3, min_insync_replicas=2
        )
    finally:
        transport.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert _shortfall_lines(text, short) == [
        f"topic '{short}' already exists with replication factor 1 and min.insync.replicas 1, "
        "less than asked (replication factor 3, min.insync.replicas 2); existing topics are "
        "left as they are: raise its replication factor to 3 with kafka-reassign-partitions.sh "
        "--execute (a reassignment listing 3 brokers for each partition), then set "
        f"kafka-configs.sh --alter --entity-type topics --entity-name '{short}' "
        "--add-config min.insync.replicas=2"
    ]
    assert _shortfall_lines(text, fresh) == []
    assert topic_settings(cluster.bootstrap, fresh) == (3, "2", "delete")
    assert topic_settings(cluster.bootstrap, short) == (1, "1", "delete")  # untouched


def test_choreo_run_says_which_existing_topic_is_short(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``choreo run`` with the variables set: its input topic existed with RF 1, one warning."""
    prefix = f"short{uuid.uuid4().hex[:8]}."
    existing = f"{prefix}test.runtime.OrderPlaced"  # the test app's inventory reads it
    _short_topic(cluster.bootstrap, existing)
    monkeypatch.setenv("CHOREO_TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("CHOREO_TOPIC_MIN_INSYNC_REPLICAS", "2")
    process = RunProcess(*_inventory_args(cluster.bootstrap, prefix))
    try:
        process.wait_for("worker started", timeout=90)
    finally:
        code = process.terminate()
    assert code == 0, process.output
    lines = _shortfall_lines(process.output, existing)
    assert len(lines) == 1, process.output
    assert "WARNING" in lines[0]
    said = " ".join(process.output.split())  # the console wraps long lines
    assert "replication factor 1 and min.insync.replicas 1, less than asked" in said
    assert "kafka-reassign-partitions.sh" in said
    assert "Traceback" not in process.output
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    created = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    assert len(created) >= 3, created
    for topic in created:
        expected = (1, "1") if topic == existing else (3, "2")
        settings = topic_settings(cluster.bootstrap, topic)
        assert settings is not None and settings[:2] == expected, topic


def test_the_summary_topic_follows_the_replication_asked(cluster: Any) -> None:
    """replication_factor 2, min.insync.replicas 2: the compacted summary topic has both."""
    topic = f"summaries-{uuid.uuid4().hex[:8]}"
    member = summary_member(
        cluster.bootstrap, topic, replication_factor=2, min_insync_replicas=2
    ).start()
    try:
        deadline = time.monotonic() + 60
        while topic_settings(cluster.bootstrap, topic) is None:
            assert member.error is None, member.error
            assert time.monotonic() < deadline, "the summary topic was not created"
            time.sleep(0.2)
    finally:
        member.stop()
    assert member.error is None, member.error
    assert topic_settings(cluster.bootstrap, topic) == (2, "2", "compact")
