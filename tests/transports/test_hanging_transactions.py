"""A transaction left hanging on a partition is found and ended with the right marker.

A restarted Kafka broker can complete a transaction without writing its markers (its
coordinator loads the transaction before it knows the partitions; docs/operating.md): the
partitions then hold the producer's transaction open while its coordinator says it is
complete, and nothing ever ends it. A restart produces that only by chance (the broker
must die with a transaction between its prepare and its markers), so these tests make the
same partition state on demand, on a real broker of their own whose KIP-890 partition
verification is off: a kafka-python transactional producer writes to a partition (or
commits a group's offsets) without adding it to its transaction, then commits; the
coordinator writes its markers only to the partitions it was told about.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, NewTopic

from choreo.cli import main
from choreo.errors import TransportError
from choreo.transports import hanging as hanging_module
from choreo.transports.base import TopicPartition
from choreo.transports.config import KafkaConfig
from choreo.transports.hanging import (
    CONSUMER_OFFSETS,
    Hanging,
    end_hanging,
    end_own_hanging,
    find_hanging,
)
from tests.chaos.test_eos_open_transaction import _stable_and_end
from tests.conftest import load_kafka_broker_module

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

kafka = pytest.importorskip("kafka")  # the pure-Python client: a dev dependency


def start_unverified_broker() -> Any:
    """Start a broker that accepts writes to partitions not in a transaction (so a test can
    leave a transaction hanging as a restarted broker does); the caller stops it."""
    module = load_kafka_broker_module()

    class UnverifiedBroker(module.KafkaBroker):  # type: ignore[name-defined,misc]
        def server_properties(self) -> str:
            unverified = "\ntransaction.partition.verification.enable=false\n"
            return str(super().server_properties()) + unverified

    return UnverifiedBroker(port=0).start()


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A broker of this module's own that accepts writes to partitions not in a transaction."""
    instance = start_unverified_broker()
    try:
        yield str(instance.bootstrap)
    finally:
        instance.stop()


def _topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(30)


def leave_hanging(
    bootstrap: str,
    *,
    visible: str,
    hidden: str | None = None,
    offsets: dict[str, int] | None = None,
    group: str = "",
    transactional_id: str | None = None,
    timestamp_ms: int | None = None,
) -> Any:
    """Commit a transaction whose markers skip ``hidden`` and the group's offsets.

    The transaction writes one record to partition 0 of ``visible`` (added to it as usual,
    so the coordinator has something to commit), one to partition 0 of ``hidden`` (never
    added: it gets no marker) and, with ``offsets``, commits ``group``'s offsets of those
    topics' partition 0 without adding the group's ``__consumer_offsets`` partition (they
    stay pending). ``timestamp_ms`` is the hidden record's timestamp (default: now).
    Returns the producer (close it after the test).
    """
    from kafka.producer.transaction_manager import (
        TransactionalRequestResult,
        TxnOffsetCommitHandler,
    )

    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=transactional_id or f"hang-{uuid.uuid4().hex[:8]}",
    )
    producer.init_transactions()
    manager = producer._transaction_manager
    unadded = kafka.TopicPartition(hidden or "", 0)
    add, allowed = manager.maybe_add_partition_to_transaction, manager.is_send_to_partition_allowed
    manager.maybe_add_partition_to_transaction = lambda tp: None if tp == unadded else add(tp)
    manager.is_send_to_partition_allowed = lambda tp: tp == unadded or allowed(tp)
    producer.begin_transaction()
    producer.send(visible, b"visible", partition=0).get(30)
    if hidden is not None:
        producer.send(hidden, b"left hanging", partition=0, timestamp_ms=timestamp_ms).get(30)
    if offsets:
        meta = kafka.structs.ConsumerGroupMetadata(group_id=group)
        commits = {
            kafka.TopicPartition(topic, 0): kafka.OffsetAndMetadata(offset, "", -1)
            for topic, offset in offsets.items()
        }
        result = TransactionalRequestResult()
        with manager._lock:  # what a successful AddOffsetsToTxn does next, without it
            pending = manager._pending_txn_offset_commits
            pending.update(commits)
            manager._enqueue_request(TxnOffsetCommitHandler(manager, meta, pending, result))
            manager._transaction_started = True
        producer._sender.wakeup()
        result.wait(30_000)
        assert result.succeeded, result.exception
    producer.commit_transaction()
    return producer


def _read_committed(
    bootstrap: str, topic: str, group: str, seconds: float, *, until: int | None = None
) -> list[bytes]:
    """Return what a read_committed member of ``group`` reads of ``topic`` in ``seconds``;
    with ``until``, once it read that many and half a second more passed (a loaded
    machine's group join and fetch can take most of a short window)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in consumer.consume(10, timeout=0.2):
                if message.error() is None:
                    values.append(message.value())
                    if until is not None and len(values) == until:
                        deadline = min(deadline, time.monotonic() + 0.5)
    finally:
        consumer.close()
    return values


def test_records_left_hanging_are_found_and_committed(bootstrap: str) -> None:
    """The coordinator committed: the remedy commits, and read_committed readers see the record.

    Before the remedy the partition's last stable offset stays at the transaction's start
    and a reader sees nothing (what every choreo worker downstream saw after the restart);
    Kafka's own tool could only abort it, losing a record the coordinator had committed.
    """
    topic, side = f"hang-{uuid.uuid4().hex[:8]}", f"side-{uuid.uuid4().hex[:8]}"
    _topics(bootstrap, topic, side)
    producer = leave_hanging(bootstrap, visible=side, hidden=topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        assert _stable_and_end(admin, KafkaPartition(topic, 0)) == (0, 1)  # its record, no marker
        assert _read_committed(bootstrap, topic, f"r-{uuid.uuid4().hex[:8]}", 3.0) == []
        config = KafkaConfig(bootstrap_servers=bootstrap)
        [hanging] = find_hanging(config, [topic], min_age=0.0)
        assert hanging.partition == TopicPartition(topic, 0)
        assert hanging.start_offset == 0
        assert (hanging.coordinator_state, hanging.outcome, hanging.remedy) == (
            "CompleteCommit",
            "commit",
            "commit",
        )
        assert find_hanging(config, [topic], min_age=3600.0) == []  # too young to tell
        end_hanging(config, hanging, commit=True)
        with pytest.raises(TransportError, match="no longer holds"):
            end_hanging(config, hanging, commit=False)  # already ended: nothing written
        assert find_hanging(config, [topic], min_age=0.0) == []
        stable, end = _stable_and_end(admin, KafkaPartition(topic, 0))
        assert stable == end
        reader = f"r-{uuid.uuid4().hex[:8]}"
        assert _read_committed(bootstrap, topic, reader, 30.0, until=1) == [b"left hanging"]
    finally:
        producer.close(timeout=5)


def test_a_groups_offsets_left_pending_are_committed_by_the_command(bootstrap: str) -> None:
    """A group whose offsets a hanging transaction holds pending reads nothing; the command
    finds the transaction on __consumer_offsets, exits 1, and with --end commits it: the
    group's members fetch the offsets it sent and read from there.

    This is the state a replica restarted as a new process meets after a broker restart
    (it does not know its last transaction's offsets to commit them again)."""
    topic, inputs = f"out-{uuid.uuid4().hex[:8]}", f"in-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    _topics(bootstrap, topic, inputs)
    plain = kafka.KafkaProducer(bootstrap_servers=bootstrap)
    for n in range(3):
        plain.send(inputs, f"in-{n}".encode(), partition=0)
    plain.flush(30)
    plain.close()
    transactional_id = f"hanging-{uuid.uuid4().hex}-{'x' * 40}"  # long: lines must wrap
    producer = leave_hanging(
        bootstrap,
        visible=topic,
        offsets={inputs: 2},
        group=group,
        transactional_id=transactional_id,
    )
    runner = CliRunner()
    args = ["transactions", "hanging", "--bootstrap", bootstrap, "--min-age", "0"]
    try:
        assert _read_committed(bootstrap, inputs, group, 5.0) == []  # offsets never fetched
        listed = runner.invoke(main, [*args, "--topic", CONSUMER_OFFSETS, "--topic", topic])
        assert listed.exit_code == 1, listed.output
        lines = listed.output.splitlines()
        assert all(len(ln) <= 80 for ln in lines), "\n".join(lines)  # an 80-column terminal
        [entry] = [
            " ".join(entry.split())
            for entry in ("\n" + listed.output).split("\n" + CONSUMER_OFFSETS)[1:]
        ]
        assert "coordinator: CompleteCommit; decided: commit; remedy: commit" in entry
        assert transactional_id in entry.replace(" ", "")
        ended = runner.invoke(main, [*args, "--topic", CONSUMER_OFFSETS, "--end"])
        assert ended.exit_code == 0, ended.output
        again = runner.invoke(main, [*args, "--topic", CONSUMER_OFFSETS])
        assert again.exit_code == 0, again.output
        assert _read_committed(bootstrap, inputs, group, 30.0, until=1) == [b"in-2"]
    finally:
        producer.close(timeout=5)


def test_its_own_ids_hanging_transaction_is_found_whatever_its_timestamp(bootstrap: str) -> None:
    """A worker ends every hanging transaction of its id, whatever its age: also one whose
    last record carries a time ahead of this host's clock (the producer's clock, on
    another host, ahead of this one's)."""
    topic, side = f"hang-{uuid.uuid4().hex[:8]}", f"side-{uuid.uuid4().hex[:8]}"
    _topics(bootstrap, topic, side)
    transactional_id = f"own-{uuid.uuid4().hex[:8]}"
    ahead_ms = int(time.time() * 1000) + 10 * 60 * 1000  # ten minutes ahead
    producer = leave_hanging(
        bootstrap,
        visible=side,
        hidden=topic,
        transactional_id=transactional_id,
        timestamp_ms=ahead_ms,
    )
    producer.close(timeout=5)  # the process that died
    config = KafkaConfig(bootstrap_servers=bootstrap)
    ended = end_own_hanging(config, transactional_id)
    assert [h.partition for h in ended] == [TopicPartition(topic, 0)]
    assert find_hanging(config, [topic], min_age=0.0) == []
    reader = f"r-{uuid.uuid4().hex[:8]}"
    assert _read_committed(bootstrap, topic, reader, 30.0, until=1) == [b"left hanging"]


def test_end_goes_on_past_a_transaction_ended_meanwhile_and_exits_1(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hanging transactions, the first ended by someone else (a worker) between the
    search and ``--end``: the real broker refuses that one's marker, the command says so,
    still ends the second, and exits 1 asking for another run (which then finds none)."""
    first, second = f"h1-{uuid.uuid4().hex[:8]}", f"h2-{uuid.uuid4().hex[:8]}"
    side = f"side-{uuid.uuid4().hex[:8]}"
    _topics(bootstrap, first, second, side)
    producers = [leave_hanging(bootstrap, visible=side, hidden=t) for t in (first, second)]
    config = KafkaConfig(bootstrap_servers=bootstrap)
    search = hanging_module.find_hanging

    def found_then_one_ended_meanwhile(*args: Any, **kwargs: Any) -> list[Hanging]:
        found = sorted(search(*args, **kwargs), key=lambda h: h.partition.topic)
        end_hanging(config, found[0], commit=True)  # as a worker would, after the search
        return found

    monkeypatch.setattr(hanging_module, "find_hanging", found_then_one_ended_meanwhile)
    args = ["transactions", "hanging", "--bootstrap", bootstrap, "--min-age", "0"]
    try:
        ended = CliRunner().invoke(main, [*args, "--topic", first, "--topic", second, "--end"])
        assert ended.exit_code == 1, ended.output
        assert "not ended:" in ended.output and "no longer holds" in ended.output
        assert "1 of 2 hanging transaction(s) ended, 1 not: run the command again" in ended.output
        assert find_hanging(config, [first, second], min_age=0.0) == []
    finally:
        for producer in producers:
            producer.close(timeout=5)


def test_a_scoped_search_covers_its_topics_and_the_offsets_and_passes_missing_ones(
    bootstrap: str,
) -> None:
    """A worker's search (its topics given) ends its id's hanging transactions on those
    topics and on the group's offsets, passes over a topic that does not exist, and
    leaves a topic it was not given to the operator's command."""
    mine, elsewhere, side, inputs = (f"{n}-{uuid.uuid4().hex[:8]}" for n in "mesi")
    _topics(bootstrap, mine, elsewhere, side, inputs)
    transactional_id = f"scoped-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    leave_hanging(
        bootstrap, visible=side, hidden=elsewhere, transactional_id=transactional_id
    ).close(timeout=5)
    leave_hanging(
        bootstrap,
        visible=side,
        hidden=mine,
        offsets={inputs: 1},
        group=group,
        transactional_id=transactional_id,
    ).close(timeout=5)
    config = KafkaConfig(bootstrap_servers=bootstrap)
    missing = f"never-created-{uuid.uuid4().hex[:8]}"
    ended = end_own_hanging(config, transactional_id, topics=[mine, inputs, missing])
    assert sorted(h.partition.topic for h in ended) == sorted([CONSUMER_OFFSETS, mine])
    [left] = find_hanging(config, [elsewhere], min_age=0.0)  # not the worker's: not searched
    assert left.transactional_id == transactional_id
    end_hanging(config, left, commit=True)
    with pytest.raises(TransportError, match="cannot describe topic"):
        find_hanging(config, [missing], min_age=0.0)  # named by an operator: an error
