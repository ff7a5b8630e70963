"""Behaviour specific to the in-process memory bus (beyond the shared contract)."""

from __future__ import annotations

import threading

import pytest

from choreo.errors import ConfigurationError, DeliveryError, TransactionError
from choreo.transports.base import Record, TopicPartition
from choreo.transports.memory import MemoryBus, MemoryTransport


def test_records_lists_a_topic_in_publication_order() -> None:
    """``bus.records`` returns every visible record of a topic in the order published."""
    bus = MemoryBus(default_partitions=3)
    producer = MemoryTransport(bus).producer()
    for n in range(9):
        producer.publish("orders", f"{n}".encode(), key=f"k{n}".encode())
    assert [r.value for r in bus.records("orders")] == [f"{n}".encode() for n in range(9)]
    assert sum(len(bus.records("orders", p)) for p in range(3)) == 9
    assert bus.records("missing") == []


def test_topics_are_auto_created_with_the_default_partition_count() -> None:
    """Publishing to a new topic creates it with ``default_partitions`` partitions."""
    bus = MemoryBus(default_partitions=5)
    MemoryTransport(bus).producer().publish("fresh", b"v")
    assert bus.partitions("fresh") == 5
    assert bus.topics() == ["fresh"]


def test_without_auto_creation_publishing_to_an_unknown_topic_fails_at_flush() -> None:
    """With auto-creation off, a record for an unknown topic is a delivery failure."""
    bus = MemoryBus(auto_create_topics=False)
    producer = MemoryTransport(bus).producer()
    producer.publish("nowhere", b"v")
    with pytest.raises(DeliveryError, match="nowhere"):
        producer.flush()
    assert bus.topics() == []


def test_null_keys_are_spread_round_robin() -> None:
    """Records without a key go to the partitions in turn."""
    bus = MemoryBus(default_partitions=3)
    producer = MemoryTransport(bus).producer()
    for _ in range(6):
        producer.publish("spread", b"v")
    assert [r.partition for r in bus.records("spread")] == [0, 1, 2, 0, 1, 2]


def test_roundrobin_assignor_interleaves_partitions() -> None:
    """The roundrobin assignor deals partitions to members in turn."""
    transport = MemoryTransport(MemoryBus(assignor="roundrobin"))
    transport.create_topics(["rr"], partitions=4)
    a, b = transport.consumer("g"), transport.consumer("g")
    a.subscribe(["rr"])
    b.subscribe(["rr"])
    a.poll(timeout=0)
    b.poll(timeout=0)
    assert a.assignment() == [TopicPartition("rr", 0), TopicPartition("rr", 2)]
    assert b.assignment() == [TopicPartition("rr", 1), TopicPartition("rr", 3)]


def test_range_assignor_gives_contiguous_ranges() -> None:
    """The range assignor gives each member a contiguous block, the first ones one extra."""
    transport = MemoryTransport(MemoryBus())
    transport.create_topics(["rg"], partitions=5)
    a, b = transport.consumer("g"), transport.consumer("g")
    a.subscribe(["rg"])
    b.subscribe(["rg"])
    a.poll(timeout=0)
    b.poll(timeout=0)
    assert a.assignment() == [TopicPartition("rg", p) for p in (0, 1, 2)]
    assert b.assignment() == [TopicPartition("rg", p) for p in (3, 4)]


def test_new_assignment_waits_until_every_holder_revoked() -> None:
    """A joining member gets nothing until the current holder has run on_revoke."""
    transport = MemoryTransport(MemoryBus())
    transport.create_topics(["held"], partitions=2)
    revoked: list[list[TopicPartition]] = []
    a = transport.consumer("g")
    a.subscribe(["held"], on_revoke=revoked.append)
    a.poll(timeout=0)
    b = transport.consumer("g")
    b.subscribe(["held"])
    assert b.poll(timeout=0.05) == []
    assert b.assignment() == [] and revoked == []
    a.poll(timeout=0)
    b.poll(timeout=0)
    assert revoked == [[TopicPartition("held", 0), TopicPartition("held", 1)]]
    assert a.assignment() == [TopicPartition("held", 0)]
    assert b.assignment() == [TopicPartition("held", 1)]


def test_a_newer_transactional_producer_fences_the_older_one() -> None:
    """Opening a second producer with the same transactional id fences the first."""
    bus = MemoryBus()
    transport = MemoryTransport(bus)
    old = transport.producer(transactional_id="tx")
    old.begin_transaction()
    old.publish("out", b"stale")
    transport.producer(transactional_id="tx")
    with pytest.raises(TransactionError) as caught:
        old.commit_transaction()
    assert caught.value.fatal
    assert bus.records("out") == []


def test_oversized_record_in_a_transaction_makes_commit_abortable() -> None:
    """A failed record inside a transaction makes commit raise an abortable error."""
    bus = MemoryBus(max_message_bytes=100)
    producer = MemoryTransport(bus).producer(transactional_id="tx")
    producer.begin_transaction()
    producer.publish("out", b"x" * 200)
    with pytest.raises(TransactionError) as caught:
        producer.commit_transaction()
    assert caught.value.abortable and not caught.value.fatal
    producer.abort_transaction()
    producer.begin_transaction()
    producer.publish("out", b"ok")
    producer.commit_transaction()
    assert [r.value for r in bus.records("out")] == [b"ok"]


def test_transaction_offsets_are_committed_for_the_consumers_group() -> None:
    """send_offsets_to_transaction commits the group's offsets when the transaction commits."""
    bus = MemoryBus()
    transport = MemoryTransport(bus)
    consumer = transport.consumer("workers")
    producer = transport.producer(transactional_id="tx")
    producer.begin_transaction()
    producer.publish("out", b"v")
    producer.send_offsets_to_transaction({TopicPartition("out", 0): 1}, consumer)
    assert bus.committed("workers") == {}
    producer.commit_transaction()
    assert bus.committed("workers") == {TopicPartition("out", 0): 1}


def test_concurrent_workers_in_one_group_read_each_record_once() -> None:
    """Threads sharing a group and a bus read every published record exactly once."""
    bus = MemoryBus(default_partitions=4)
    transport = MemoryTransport(bus)
    transport.create_topics(["work"], partitions=4)
    seen: list[Record] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        consumer = transport.consumer("pool")
        consumer.subscribe(["work"])
        try:
            while not stop.is_set():
                batch = consumer.poll(timeout=0.05)
                if batch:
                    consumer.commit({r.topic_partition: r.offset + 1 for r in batch})
                    with lock:
                        seen.extend(batch)
        finally:
            consumer.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    producer = transport.producer()
    for n in range(2000):
        producer.publish("work", f"{n}".encode(), key=f"saga-{n % 50}".encode())
    producer.flush()
    deadline = threading.Event()
    for _ in range(100):
        with lock:
            if len(seen) >= 2000:
                break
        deadline.wait(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    values = sorted(int(r.value or b"-1") for r in seen)
    assert values == list(range(2000))


def test_invalid_settings_are_configuration_errors() -> None:
    """A bus with no partitions or an unknown assignor is rejected at construction."""
    with pytest.raises(ConfigurationError):
        MemoryBus(default_partitions=0)
    with pytest.raises(ConfigurationError):
        MemoryBus(assignor="sticky")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        MemoryTransport().consumer("")


def test_a_failing_on_revoke_still_gives_the_partitions_up() -> None:
    """An exception from on_revoke reaches the caller, and the rebalance still completes."""
    transport = MemoryTransport(MemoryBus())
    transport.create_topics(["t"], partitions=2)

    def on_revoke(partitions: list[TopicPartition]) -> None:
        raise RuntimeError("handler state could not be saved")

    a = transport.consumer("g")
    a.subscribe(["t"], on_revoke=on_revoke)
    a.poll(timeout=0)
    b = transport.consumer("g")
    b.subscribe(["t"])
    with pytest.raises(RuntimeError, match="could not be saved"):
        a.poll(timeout=0)
    b.poll(timeout=0)
    a.poll(timeout=0)
    assert a.assignment() == [TopicPartition("t", 0)]
    assert b.assignment() == [TopicPartition("t", 1)]


def _stored(bus: MemoryBus, topic: str) -> list[object]:
    """Return ``topic``'s values in publication order, then each partition's records."""
    return [[r.value for r in bus.records(topic)]] + [
        (p, r.offset, r.key, r.value, r.headers)
        for p in range(bus.partitions(topic))
        for r in bus.records(topic, p)
    ]


def test_publish_many_stores_what_publish_would_each() -> None:
    """A batch lands as one publish per record would: partitions, offsets, order, headers.

    Records for several topics, with and without keys, on one- and three-partition
    topics; an oversized record and one for an illegal topic name are counted for the
    next flush (which raises naming the first), and the rest of the batch is stored.
    """
    batch = [
        (f"id{n}", topic, key, f"v{n}".encode(), [("h", f"{n}".encode())])
        for n, (topic, key) in enumerate(
            [("one", b"a"), ("three", b"a"), ("three", None), ("three", b"b"), ("one", None)] * 3
        )
    ]
    bad = [("big", "three", b"k", b"x" * 2_000, ()), ("bad", "no spaces!", None, b"v", ())]
    outcomes = []
    for many in (False, True):
        bus = MemoryBus(max_message_bytes=1_000)
        bus.create_topics(["one"], partitions=1)
        bus.create_topics(["three"], partitions=3)
        producer = MemoryTransport(bus).producer()
        records = [*batch[:4], *bad, *batch[4:]]
        if many:
            producer.publish_many(records)
        else:
            for _, topic, key, value, headers in records:
                producer.publish(topic, value, key=key, headers=headers)
        with pytest.raises(DeliveryError) as failed:
            producer.flush()
        producer.flush()  # the failures were reported once
        outcomes.append((_stored(bus, "one"), _stored(bus, "three"), str(failed.value)))
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[1][0]) + len(outcomes[1][1]) == 2 + len(batch)
    assert "three: record of" in outcomes[1][2] and "2 record" in outcomes[1][2]


def test_publish_many_stamps_the_batch_once_and_wakes_waiting_consumers() -> None:
    """The batch's records share one timestamp; a consumer blocked in poll gets them."""
    bus = MemoryBus()
    transport = MemoryTransport(bus)
    consumer = transport.consumer("g")
    consumer.subscribe(["t"])
    got: list[Record] = []
    waiting = threading.Thread(target=lambda: got.extend(consumer.poll(10, 5.0)))
    waiting.start()
    transport.producer().publish_many([(str(n), "t", b"k", b"v", ()) for n in range(5)])
    waiting.join(6.0)
    assert not waiting.is_alive()
    records = got + consumer.poll(10, 0.0)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert len({r.timestamp_ms for r in records}) == 1
    consumer.close()


def test_publish_many_in_a_transaction_is_held_back_until_commit() -> None:
    """A transactional producer's batch is invisible until the transaction commits."""
    bus = MemoryBus()
    producer = MemoryTransport(bus).producer(transactional_id="tx")
    producer.begin_transaction()
    producer.publish_many([("a", "t", b"k", b"1", ()), ("b", "t", b"k", b"2", ())])
    assert bus.records("t") == []
    producer.commit_transaction()
    assert [r.value for r in bus.records("t")] == [b"1", b"2"]
