"""The consumers' ``high_watermarks`` on the real broker: one bounded call for all partitions.

Both Kafka transports. The ends are the ones a ``read_committed`` reader stops at (the
last stable offset: below a transaction still open) and equal what librdkafka's
per-partition watermark query of a ``read_committed`` consumer answers (the path the
confluent transport took before); many partitions are answered together; and with the
broker stopped the call gives up within its one ``timeout`` for all of them, instead
of ``timeout`` per partition.
"""

from __future__ import annotations

import gc
import os
import signal
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import confluent_kafka as ck
import pytest

from choreo.transports.base import TopicPartition, Transport
from choreo.transports.catchup import CatchUp, read_to_ends
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent import ConfluentConsumer
from choreo.transports.factory import open_transport
from tests.conftest import load_kafka_broker_module

pytestmark = pytest.mark.kafka

KINDS = ["confluent", "kafka-python"]
_GRACE_S = 5.0
_READ_S = 20.0  # the catch-up read's max_seconds: a group join fits, 60 ends at 2 s do not
"""What the bounded call may take past its timeout (a close of a connection, a thread's
wake-up); the per-partition path took ``timeout`` for each of the 60 partitions."""


def _ends(consumer: Any, partitions: list[TopicPartition], timeout: float = 10.0) -> Any:
    return consumer.high_watermarks(partitions, timeout=timeout)


def _per_partition(bootstrap: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The ends as librdkafka's per-partition query answers a ``read_committed`` consumer."""
    client = ck.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"ref-{uuid.uuid4().hex[:8]}",
         "isolation.level": "read_committed"}
    )
    try:
        return {
            tp: client.get_watermark_offsets(
                ck.TopicPartition(tp.topic, tp.partition), timeout=10, cached=False
            )[1]
            for tp in partitions
        }
    finally:
        client.close()


def _wait_for_ends(
    bootstrap: str, partitions: list[TopicPartition], wanted: dict[TopicPartition, int]
) -> None:
    """Wait (up to 30 s) until the per-partition query answers ``wanted``."""
    deadline = time.monotonic() + 30
    while _per_partition(bootstrap, partitions) != wanted:
        assert time.monotonic() < deadline, f"the ends never reached {wanted}"
        time.sleep(0.05)


def _transactional(bootstrap: str, name: str) -> ck.Producer:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "transactional.id": name})
    producer.init_transactions(30)
    return producer


def _ends_once_moved(
    consumer: Any, partitions: list[TopicPartition], before: dict[TopicPartition, int]
) -> Any:
    """The ends once they differ from ``before`` (or after 30 s): the coordinator writes
    a transaction's markers after its end call returned."""
    deadline = time.monotonic() + 30
    while True:
        ends = _ends(consumer, partitions)
        if ends != before or time.monotonic() > deadline:
            return ends
        time.sleep(0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_ends_stop_below_an_open_transaction_as_the_per_partition_query_did(
    kafka_bootstrap: str, kind: str
) -> None:
    """Partition 0: three committed records and their marker, then two of a transaction
    still open; its end is 4 (the last stable offset), not the high watermark 6. An empty
    partition ends at 0. Once the transaction is aborted the end moves past its marker."""
    topic = f"ends-txn-{uuid.uuid4().hex[:8]}"
    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    transport.create_topics([topic], partitions=2)
    committed = _transactional(kafka_bootstrap, f"{topic}-c")
    committed.begin_transaction()
    for n in range(3):
        committed.produce(topic, f"c{n}".encode(), partition=0)
    committed.commit_transaction(30)
    # the coordinator writes the commit marker after commit_transaction returned: records
    # of the open transaction appended before it would start below offset 4
    _wait_for_ends(kafka_bootstrap, parts[:1], {parts[0]: 4})
    hanging = _transactional(kafka_bootstrap, f"{topic}-open")
    hanging.begin_transaction()
    for n in range(2):
        hanging.produce(topic, f"o{n}".encode(), partition=0)
    hanging.flush(30)
    consumer = transport.consumer(f"ends-{uuid.uuid4().hex[:8]}")
    try:
        while_open = _ends(consumer, parts)
        reference = _per_partition(kafka_bootstrap, parts)
        hanging.abort_transaction(30)
        after_abort = _ends_once_moved(consumer, parts, while_open)
    finally:
        consumer.close()
        _close(transport)
    assert while_open == reference == {parts[0]: 4, parts[1]: 0}
    assert after_abort == {parts[0]: 7, parts[1]: 0}  # 6 plus the abort marker


@pytest.mark.parametrize("kind", KINDS)
def test_sixty_partitions_get_their_ends_in_one_call(kafka_bootstrap: str, kind: str) -> None:
    """Partition ``n`` of 60 holds ``n % 5`` records (over two topics); every end is
    answered by one call and equals the per-partition query's."""
    topics = [f"ends-many-{uuid.uuid4().hex[:8]}", f"ends-few-{uuid.uuid4().hex[:8]}"]
    transport = open_transport(kind, bootstrap=kafka_bootstrap)
    transport.create_topics(topics[:1], partitions=57)
    transport.create_topics(topics[1:], partitions=3)
    parts = [TopicPartition(topics[0], n) for n in range(57)]
    parts += [TopicPartition(topics[1], n) for n in range(3)]
    producer = ck.Producer({"bootstrap.servers": kafka_bootstrap})
    for number, tp in enumerate(parts):
        for _ in range(number % 5):
            producer.produce(tp.topic, b"x", partition=tp.partition)
    assert producer.flush(30) == 0
    consumer = transport.consumer(f"ends-{uuid.uuid4().hex[:8]}")
    try:
        ends = _ends(consumer, parts)
    finally:
        consumer.close()
        _close(transport)
    assert ends == {tp: number % 5 for number, tp in enumerate(parts)}
    assert ends == _per_partition(kafka_bootstrap, parts)


@pytest.fixture
def broker() -> Iterator[Any]:
    """A broker of this test's own (it is stopped)."""
    with load_kafka_broker_module().KafkaBroker(port=0) as instance:
        yield instance


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", ["hung", "killed"])
def test_ends_give_up_within_one_timeout_when_the_broker_is_down(
    broker: Any, kind: str, fault: str
) -> None:
    """60 partitions' ends are answered; then the broker hangs (SIGSTOP: it takes
    connections and requests and answers none, as a stalled broker does) or is killed,
    and the same call with a 1 s timeout returns nothing within that one timeout (plus a
    grace), where asking each partition in turn took up to 60 of them."""
    topic = f"ends-down-{uuid.uuid4().hex[:8]}"
    transport = open_transport(kind, bootstrap=broker.bootstrap)
    transport.create_topics([topic], partitions=60)
    parts = [TopicPartition(topic, n) for n in range(60)]
    consumer = transport.consumer(f"ends-{uuid.uuid4().hex[:8]}")
    try:
        assert _ends(consumer, parts) == dict.fromkeys(parts, 0)
        if fault == "hung":
            os.kill(broker.pid, signal.SIGSTOP)
            time.sleep(0.5)  # every thread of the JVM stopped
        else:
            broker.kill()
        try:
            started = time.monotonic()
            down = _ends(consumer, parts, timeout=1.0)
            took = time.monotonic() - started
        finally:
            if fault == "hung":
                os.kill(broker.pid, signal.SIGCONT)
    finally:
        consumer.close()
        _close(transport)
    assert took < 1.0 + _GRACE_S, f"the ends took {took:.1f} s with a 1 s bound"
    assert down == {}


def _close(transport: Transport) -> None:
    transport.close()  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_catch_up_read_keeps_its_bound_when_the_broker_hangs_at_assignment(
    broker: Any, kind: str
) -> None:
    """The broker hangs (SIGSTOP) the moment the read's consumer got its 60 partitions,
    before their ends are asked: the read stops at its ``max_seconds`` (plus a grace),
    reporting every partition behind, where the ends alone took 2 s per partition (120 s).
    ``max_seconds`` counts from the subscription, so it leaves room for the group join
    (the broker delays a new group's first assignment by 3 s; a loaded machine more)."""
    topic = f"ends-catchup-{uuid.uuid4().hex[:8]}"
    transport = open_transport(kind, bootstrap=broker.bootstrap)
    transport.create_topics([topic], partitions=60)
    stopped: list[bool] = []

    def hang_the_broker(assigned: Sequence[TopicPartition]) -> Sequence[TopicPartition]:
        os.kill(broker.pid, signal.SIGSTOP)
        stopped.append(True)
        return assigned

    report = CatchUp()
    try:
        records = list(
            read_to_ends(
                transport, [topic], select=hang_the_broker, max_seconds=_READ_S, report=report
            )
        )
    finally:
        if stopped:
            os.kill(broker.pid, signal.SIGCONT)
        _close(transport)
    assert stopped and records == []
    assert report.timed_out and report.assigned
    assert report.behind == {TopicPartition(topic, n) for n in range(60)}
    assert report.seconds < _READ_S + _GRACE_S, (
        f"the read took {report.seconds:.1f} s (bound {_READ_S:.0f} s)"
    )


def test_a_consumer_releases_the_admin_client_it_made_for_its_ends(kafka_bootstrap: str) -> None:
    """A confluent consumer made without a transport asks its ends with an admin client
    of its own (threads, a connection to every broker): its close releases it."""
    topic = f"ends-own-{uuid.uuid4().hex[:8]}"
    open_transport("confluent", bootstrap=kafka_bootstrap).create_topics([topic])
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    consumer = ConfluentConsumer(config, f"ends-{uuid.uuid4().hex[:8]}")
    assert _ends(consumer, [TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 0}
    admin = weakref.ref(consumer._admin_client())
    consumer.close()
    gc.collect()
    assert admin() is None, "the consumer's own admin client outlived its close"
