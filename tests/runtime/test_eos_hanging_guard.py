"""The exactly-once worker's search for hanging transactions can never stop the worker.

The search (``choreo.transports.hanging``) drives kafka-python's admin client, in part
through its internals; a kafka-python release that changed them must cost a warning,
not a worker that cannot start or recover from an outage.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from choreo.runtime import Worker, WorkerConfig
from choreo.runtime.delivery import transactional
from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.librdkafka_log import LIBRDKAFKA_LOGGER
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.serdes import JsonSerde
from .fixtures.shop import ALL_EVENTS, build_shop


def _choreo_warning(record: logging.LogRecord) -> bool:
    """A WARNING of choreo's own: a client thread left by another test of the process
    (kafka-python's event loop, librdkafka) may warn of a slow machine meanwhile."""
    return (
        record.levelno == logging.WARNING
        and record.name.startswith("choreo.")
        and record.name != LIBRDKAFKA_LOGGER.name
    )


def _delivery() -> Any:
    """An exactly-once worker's delivery whose transport looks like a Kafka one."""
    worker = Worker(
        build_shop().inventory,
        MemoryTransport(MemoryBus(default_partitions=1)),
        JsonSerde(ALL_EVENTS),
        config=WorkerConfig(poll_timeout=0.0, exactly_once=True, instance_id="inventory-0"),
    )
    worker.run_once(0.01)  # opens the delivery (its link and producer)
    delivery: Any = worker.delivery
    delivery.transport = SimpleNamespace(config=KafkaConfig(bootstrap_servers="127.0.0.1:1"))
    return delivery


def test_an_unexpected_error_of_the_search_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An AttributeError from kafka-python's internals is logged once; nothing is raised."""
    delivery = _delivery()

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise AttributeError("'KafkaAdminClient' object has no attribute '_abort_request'")

    monkeypatch.setattr(transactional, "end_own_hanging", broken)
    with caplog.at_level(logging.WARNING):
        delivery._end_hanging()
    warnings = [r for r in caplog.records if _choreo_warning(r)]
    assert len(warnings) == 1
    assert "left hanging" in warnings[0].getMessage()
    assert "AttributeError" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # the traceback only at DEBUG


def test_what_the_search_ended_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each transaction the search ended is one WARNING line naming it."""
    delivery = _delivery()
    ended = SimpleNamespace(describe=lambda: "out[3]: transaction of producer 7")
    monkeypatch.setattr(transactional, "end_own_hanging", lambda *a, **k: [ended])
    with caplog.at_level(logging.WARNING):
        delivery._end_hanging()
    lines = [r.getMessage() for r in caplog.records if _choreo_warning(r)]
    assert len(lines) == 1
    assert lines[0].endswith("ended a transaction left hanging: out[3]: transaction of producer 7")


def test_the_search_is_scoped_to_the_workers_own_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker searches the topics it reads or may write (inputs, every declared
    event's topic, its dead-letter topic), not every partition of the cluster."""
    delivery = _delivery()
    asked: list[Any] = []
    monkeypatch.setattr(
        transactional, "end_own_hanging", lambda *a, **k: asked.append(k["topics"]) or []
    )
    delivery._end_hanging()
    inventory, naming = build_shop().inventory, WorkerConfig()
    types = {t for spec in inventory.handlers for t in (*spec.emitted_types, *spec.consumed_types)}
    assert asked and asked[0] is not None
    assert set(asked[0]) == {
        *map(naming.topic_naming, types),
        naming.deadletter_naming(inventory.name),
    }


def test_an_assignment_searches_when_the_producer_rode_the_outage_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer that was not renewed after an outage still gets its id's hanging
    transactions searched at the next assignment: a restarted broker can skip a marker of
    its last transaction without the producer ever losing its registration."""
    delivery = _delivery()
    asked: list[str] = []
    monkeypatch.setattr(transactional, "end_own_hanging", lambda *a, **k: asked.append(a[1]) or [])
    delivery.tick()  # settles the worker's first assignment
    asked.clear()
    delivery.tick()
    assert asked == []  # no assignment since
    delivery.assign([TopicPartition("test.runtime.OrderPlaced", 0)])
    delivery.tick()
    assert asked == [delivery.transactional_id]
    delivery.tick()
    assert asked == [delivery.transactional_id]  # once per assignment
