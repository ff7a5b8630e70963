"""The tracker group's summary topic follows the replication asked for the services' topics.

``TrackerGroupMember(replication_factor=, min_insync_replicas=)`` and ``choreo tracker run
--replication-factor / --min-insync-replicas`` (or ``$CHOREO_TOPIC_REPLICATION_FACTOR`` /
``$CHOREO_TOPIC_MIN_INSYNC_REPLICAS``, the variables ``choreo run`` reads) create the
compacted summary topic with them, and refuse more replicas than the cluster has before
creating anything. On the session's single broker; the three-broker cluster test
(``tests/chaos/test_replication_cluster.py``) shows a factor other than the default.
"""

from __future__ import annotations

import time
import uuid

import pytest
from click.testing import CliRunner

from choreo.cli import main
from choreo.errors import ConfigurationError
from choreo.tracker import Tracker
from choreo.tracker.group import TrackerGroupMember
from choreo.transports.factory import open_transport
from tests.transports.topic_settings import topic_settings

pytestmark = pytest.mark.kafka


def summary_member(bootstrap: str, topic: str, **replication: int | None) -> TrackerGroupMember:
    """A tracker group member on ``bootstrap`` whose summary topic is ``topic``."""
    return TrackerGroupMember(
        open_transport("confluent", bootstrap=bootstrap),
        group_id=f"g-{topic}",
        summary_topic=topic,
        topics=[f"{topic}.events"],
        new_tracker=lambda: Tracker(default_deadline_s=3600),
        partitions=2,
        commit_interval=0.3,
        poll_timeout=0.1,
        **replication,
    )


def test_the_summary_topic_is_created_with_the_replication_asked(kafka_bootstrap: str) -> None:
    """RF 1 and min.insync.replicas 1 asked: the summary topic has both, and is compacted."""
    topic = f"summaries-{uuid.uuid4().hex[:8]}"
    member = summary_member(
        kafka_bootstrap, topic, replication_factor=1, min_insync_replicas=1
    ).start()
    try:
        deadline = time.monotonic() + 30
        while topic_settings(kafka_bootstrap, topic) is None:
            assert member.error is None, member.error
            assert time.monotonic() < deadline, "the summary topic was not created"
            time.sleep(0.2)
    finally:
        member.stop()
    assert member.error is None, member.error
    assert topic_settings(kafka_bootstrap, topic) == (1, "1", "compact")


def test_more_replicas_than_brokers_stops_the_member_before_creating(kafka_bootstrap: str) -> None:
    """RF 3 on one broker: the member ends with the reason, no summary topic exists."""
    topic = f"summaries-{uuid.uuid4().hex[:8]}"
    member = summary_member(kafka_bootstrap, topic, replication_factor=3)
    member.start()
    member.stop(timeout=60)
    assert isinstance(member.error, ConfigurationError)
    assert "replication factor 3 needs at least 3 brokers, and the cluster has 1 live" in str(
        member.error
    )
    assert topic_settings(kafka_bootstrap, topic) is None
    with pytest.raises(ConfigurationError, match="larger than the replication factor"):
        summary_member(kafka_bootstrap, topic, replication_factor=1, min_insync_replicas=2)


def test_choreo_tracker_run_reads_the_services_replication_variables(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$CHOREO_TOPIC_REPLICATION_FACTOR=3 on one broker: ``choreo tracker run`` says why."""
    topic = f"summaries-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CHOREO_TOPIC_REPLICATION_FACTOR", "3")
    result = CliRunner().invoke(
        main,
        ["tracker", "run", "--bootstrap", kafka_bootstrap, "--group", f"g-{topic}",
         "--summary-topic", topic, "--topics", f"^{topic}\\.events$", "--partitions", "1"],
    )
    assert result.exit_code == 1, result.output
    assert "replication factor 3 needs at least 3 brokers" in result.output
    assert "Traceback" not in result.output
    assert topic_settings(kafka_bootstrap, topic) is None
    help_text = CliRunner().invoke(main, ["tracker", "run", "--help"]).output
    assert "CHOREO_TOPIC_REPLICATION_FACTOR" in help_text
    assert "CHOREO_TOPIC_MIN_INSYNC_REPLICAS" in help_text
