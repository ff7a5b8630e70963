"""The contract every transport honours, as pytest test classes to subclass per transport.

:class:`TransportContract` holds what every transport must do (publish and read with
keys, headers and per-key order, Kafka's partitioning, groups and rebalances, commits,
seeks, pause and resume, delivery errors, closing, topic administration);
:class:`TransactionContract` adds what a transport with transactions
(:class:`~choreo.transports.base.TransactionalProducer`) must do. choreo runs both
against its memory, confluent-kafka and kafka-python transports; the author of another
transport runs them against theirs, in their own test suite::

    # tests/test_my_transport_contract.py
    import pytest

    from choreo.testing.transport_contract import TransactionContract, TransportContract
    from my_package import MyTransport


    class TestMyTransport(TransportContract, TransactionContract):  # drop the second
        \"\"\"MyTransport honours choreo's transport contract.\"\"\"  # without transactions

        patience = 30.0  # seconds any single wait may take (lower it for a fast transport)

        @pytest.fixture
        def transport(self) -> MyTransport:
            return MyTransport("localhost:9092")

Then ``pytest tests/test_my_transport_contract.py``. For pytest's detailed assertion
messages, add ``pytest.register_assert_rewrite("choreo.testing.transport_contract")`` to
your ``conftest.py`` (before the test module imports it). Tests create fresh topic and
group names (``contract-...``), so runs can share a broker; every wait is a loop bounded
by ``patience``: fast when things work, a clear failure when they do not. This module
imports pytest, which :mod:`choreo.testing` itself does not.

Why one module of over 500 lines: it is one test per behaviour of the transport
contract, in the order the contract states them; a third-party author imports one class.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from choreo.errors import DeliveryError, TransactionError, TransportClosedError, TransportError
from choreo.transports.base import (
    Consumer,
    Producer,
    Record,
    TopicPartition,
    TransactionalProducer,
    Transport,
    supports_transactions,
)
from choreo.transports.partitioner import partition_for
from choreo.transports.shared import publish_records

__all__ = ["Clients", "ContractBase", "TransactionContract", "TransportContract", "unique"]

OVERSIZED = b"x" * 2_000_000  # beyond every client's and broker's default message size


def unique(prefix: str) -> str:
    """Return a name no other test (or engineer) on the shared broker uses."""
    return f"contract-{prefix}-{uuid.uuid4().hex[:10]}"


class Clients:
    """Opens producers and consumers for one test and closes them all afterwards."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._opened: list[Producer | Consumer] = []

    def producer(self, transactional_id: str | None = None) -> Producer:
        """Return a producer that is closed at teardown."""
        producer = self.transport.producer(transactional_id=transactional_id)
        self._opened.append(producer)
        return producer

    def transactional(self, transactional_id: str) -> TransactionalProducer:
        """Return a transactional producer that is closed at teardown."""
        producer = self.producer(transactional_id)
        assert isinstance(producer, TransactionalProducer), "no transactional producer"
        assert supports_transactions(producer)
        return producer

    def consumer(self, group_id: str, *, from_beginning: bool = True) -> Consumer:
        """Return a consumer that is closed at teardown."""
        consumer = self.transport.consumer(group_id, from_beginning=from_beginning)
        self._opened.append(consumer)
        return consumer

    def close(self) -> None:
        """Close everything opened, newest first."""
        for client in reversed(self._opened):
            client.close()


class ContractBase:
    """The fixtures and helpers of the contract classes; a subclass overrides ``transport``."""

    patience = 30.0  # seconds any single wait may take before the test fails
    poll_timeout = 0.2

    @pytest.fixture
    def transport(self) -> Transport:
        """Return the transport under test (each subclass overrides this fixture)."""
        raise NotImplementedError

    @pytest.fixture
    def clients(self, transport: Transport) -> Iterator[Clients]:
        """Return a helper that opens producers and consumers and closes them after the test."""
        helper = Clients(transport)
        yield helper
        helper.close()

    # --- helpers ---------------------------------------------------------------------

    def topic(self, transport: Transport, partitions: int = 1, prefix: str = "t") -> str:
        """Create and return a fresh topic."""
        name = unique(prefix)
        transport.create_topics([name], partitions=partitions)
        return name

    def drain(
        self,
        consumer: Consumer,
        count: int,
        *,
        max_records: int = 500,
        until: Callable[[list[Record]], bool] | None = None,
    ) -> list[Record]:
        """Poll until ``count`` records arrived (or ``until`` holds), failing after ``patience``."""
        records: list[Record] = []
        deadline = time.monotonic() + self.patience
        done = until or (lambda got: len(got) >= count)
        while not done(records):
            if time.monotonic() > deadline:
                pytest.fail(f"got {len(records)} of {count} records within {self.patience}s")
            records.extend(consumer.poll(max_records=max_records, timeout=self.poll_timeout))
        return records

    def settle(
        self, consumers: Sequence[Consumer], done: Callable[[], bool], what: str
    ) -> list[Record]:
        """Poll every consumer in turn until ``done()``; return what they read meanwhile."""
        records: list[Record] = []
        deadline = time.monotonic() + self.patience
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {self.patience}s")
            for consumer in consumers:
                records.extend(consumer.poll(timeout=self.poll_timeout))
        return records

    def publish_all(
        self, producer: Producer, topic: str, items: Sequence[tuple[bytes | None, bytes]]
    ) -> None:
        """Publish (key, value) pairs and flush."""
        for key, value in items:
            producer.publish(topic, value, key=key)
        producer.flush(self.patience)


class TransportContract(ContractBase):
    """What every transport does: publish, read, groups, commits, seeks, pauses, closing."""

    # --- publishing and reading ------------------------------------------------------

    def test_keyed_round_trip_keeps_headers_and_per_key_order(self, clients: Clients) -> None:
        """Records come back with key, value and headers, each key's records in publish order."""
        topic = self.topic(clients.transport, partitions=3)
        producer = clients.producer()
        keys = [f"saga-{i}".encode() for i in range(5)]
        for n in range(30):
            key = keys[n % 5]
            headers = [("choreo-seq", str(n).encode()), ("choreo-key", key)]
            producer.publish(topic, f"v{n}".encode(), key=key, headers=headers)
        producer.flush(self.patience)
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        records = self.drain(consumer, 30)
        assert len(records) == 30
        for record in records:
            _assert_round_tripped(record, topic, keys)
        for key in keys:
            _assert_in_publish_order([r for r in records if r.key == key])

    def test_same_key_lands_in_kafkas_murmur2_partition(self, clients: Clients) -> None:
        """Each key lands in the partition Kafka's default (murmur2) partitioner picks."""
        topic = self.topic(clients.transport, partitions=4)
        keys = [f"order-{i}".encode() for i in range(24)]
        self.publish_all(clients.producer(), topic, [(k, b"v") for k in keys])
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        records = self.drain(consumer, len(keys))
        placed = {r.key: r.partition for r in records}
        assert placed == {k: partition_for(k, 4) for k in keys}
        assert len(set(placed.values())) > 1

    def test_poll_returns_at_most_max_records(self, clients: Clients) -> None:
        """A poll never returns more than ``max_records``; all records arrive exactly once."""
        topic = self.topic(clients.transport)
        self.publish_all(clients.producer(), topic, [(None, f"{n}".encode()) for n in range(25)])
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        sizes: list[int] = []
        records: list[Record] = []
        deadline = time.monotonic() + self.patience
        while len(records) < 25 and time.monotonic() < deadline:
            batch = consumer.poll(max_records=10, timeout=self.poll_timeout)
            sizes.append(len(batch))
            records.extend(batch)
        assert max(sizes) <= 10
        assert [r.value for r in records] == [f"{n}".encode() for n in range(25)]
        assert [r.offset for r in records] == list(range(25))

    def test_poll_without_records_returns_empty_after_timeout(self, clients: Clients) -> None:
        """Polling an empty topic returns an empty list once the timeout passes."""
        topic = self.topic(clients.transport)
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        started = time.monotonic()
        assert consumer.poll(timeout=0.3) == []
        assert time.monotonic() - started < self.patience

    def test_poll_returns_a_record_published_while_waiting(self, clients: Clients) -> None:
        """A blocked poll returns a record published by another thread during the wait."""
        topic = self.topic(clients.transport)
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        self.settle([consumer], lambda: bool(consumer.assignment()), "assignment")
        producer = clients.producer()

        def publish_later() -> None:
            time.sleep(0.3)
            producer.publish(topic, b"late", key=b"k")
            producer.flush(self.patience)

        thread = threading.Thread(target=publish_later)
        thread.start()
        try:
            records = self.drain(consumer, 1)
        finally:
            thread.join()
        assert [r.value for r in records] == [b"late"]

    # --- groups and offsets ----------------------------------------------------------

    def test_reopened_group_resumes_after_committed_offset(self, clients: Clients) -> None:
        """A new member of a group starts where the group committed, not at the beginning."""
        topic = self.topic(clients.transport)
        self.publish_all(clients.producer(), topic, [(None, f"{n}".encode()) for n in range(10)])
        group = unique("g")
        first = clients.consumer(group)
        first.subscribe([topic])
        records = self.drain(first, 10)
        first.commit({TopicPartition(topic, 0): records[5].offset + 1})
        first.close()
        second = clients.consumer(group)
        second.subscribe([topic])
        rest = self.drain(second, 4)
        assert [r.value for r in rest] == [b"6", b"7", b"8", b"9"]

    def test_commit_in_on_revoke_during_close_is_kept(self, clients: Clients) -> None:
        """``close`` runs on_revoke first, and offsets committed there are kept."""
        topic = self.topic(clients.transport)
        self.publish_all(clients.producer(), topic, [(None, f"{n}".encode()) for n in range(6)])
        group = unique("g")
        first = clients.consumer(group)
        handled: dict[TopicPartition, int] = {}
        revoked: list[list[TopicPartition]] = []

        def on_revoke(partitions: list[TopicPartition]) -> None:
            revoked.append(partitions)
            first.commit({tp: handled[tp] for tp in partitions if tp in handled})

        first.subscribe([topic], on_revoke=on_revoke)
        for record in self.drain(first, 4, max_records=4)[:4]:
            handled[record.topic_partition] = record.offset + 1
        first.close()
        assert revoked == [[TopicPartition(topic, 0)]]
        second = clients.consumer(group)
        second.subscribe([topic])
        assert [r.value for r in self.drain(second, 2)] == [b"4", b"5"]

    def test_two_members_split_partitions_and_rebalance_on_leave(self, clients: Clients) -> None:
        """Two members share a group's partitions; when one leaves the other gets them all."""
        topic = self.topic(clients.transport, partitions=4)
        everything = {TopicPartition(topic, p) for p in range(4)}
        group = unique("g")
        events: list[tuple[str, str, list[TopicPartition]]] = []

        def recorder(who: str, what: str) -> Callable[[list[TopicPartition]], None]:
            return lambda partitions: events.append((who, what, sorted(partitions)))

        a = clients.consumer(group)
        a.subscribe([topic], on_assign=recorder("a", "assign"), on_revoke=recorder("a", "revoke"))
        self.settle([a], lambda: set(a.assignment()) == everything, "a owning all partitions")
        b = clients.consumer(group)
        b.subscribe([topic], on_assign=recorder("b", "assign"), on_revoke=recorder("b", "revoke"))

        def split() -> bool:
            mine, theirs = set(a.assignment()), set(b.assignment())
            return bool(mine) and bool(theirs) and mine | theirs == everything and not mine & theirs

        self.settle([a, b], split, "a split between two members")
        assert ("a", "revoke", sorted(everything)) in events
        assert any(who == "b" and what == "assign" and parts for who, what, parts in events)
        b.close()
        self.settle([a], lambda: set(a.assignment()) == everything, "a taking partitions back")
        assert events[-1] == ("a", "assign", sorted(everything))

    def test_from_beginning_reads_earlier_records_and_latest_does_not(
        self, clients: Clients
    ) -> None:
        """A new group starts at the earliest offset, or with ``from_beginning=False`` the end."""
        topic = self.topic(clients.transport)
        producer = clients.producer()
        self.publish_all(producer, topic, [(None, b"old-0"), (None, b"old-1")])
        earliest = clients.consumer(unique("g"), from_beginning=True)
        earliest.subscribe([topic])
        assert [r.value for r in self.drain(earliest, 2)] == [b"old-0", b"old-1"]
        latest = clients.consumer(unique("g"), from_beginning=False)
        latest.subscribe([topic])
        self.settle([latest], lambda: bool(latest.assignment()), "assignment")
        seen: list[Record] = []
        deadline = time.monotonic() + self.patience
        n = 0
        # The end offset is looked up asynchronously on Kafka: publish until one is seen.
        while not any(r.value and r.value.startswith(b"new") for r in seen):
            assert time.monotonic() < deadline, "no new record reached the latest consumer"
            self.publish_all(producer, topic, [(None, f"new-{n}".encode())])
            n += 1
            seen.extend(latest.poll(timeout=self.poll_timeout))
        assert not [r for r in seen if r.value and r.value.startswith(b"old")]

    def test_seek_moves_the_next_poll(self, clients: Clients) -> None:
        """After ``seek`` the next poll of that partition starts at the given offset."""
        topic = self.topic(clients.transport)
        self.publish_all(clients.producer(), topic, [(None, f"{n}".encode()) for n in range(5)])
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        assert len(self.drain(consumer, 5)) == 5
        consumer.seek(TopicPartition(topic, 0), 2)
        assert [r.offset for r in self.drain(consumer, 3)] == [2, 3, 4]

    def test_seek_inside_on_assign_sets_the_start(self, clients: Clients) -> None:
        """A seek made in on_assign decides where reading starts."""
        topic = self.topic(clients.transport)
        self.publish_all(clients.producer(), topic, [(None, f"{n}".encode()) for n in range(5)])
        consumer = clients.consumer(unique("g"))

        def on_assign(partitions: list[TopicPartition]) -> None:
            for tp in partitions:
                consumer.seek(tp, 3)

        consumer.subscribe([topic], on_assign=on_assign)
        assert [r.value for r in self.drain(consumer, 2)] == [b"3", b"4"]

    def test_seek_of_an_unassigned_partition_raises(self, clients: Clients) -> None:
        """Seeking a partition this consumer does not own raises TransportError."""
        topic = self.topic(clients.transport)
        consumer = clients.consumer(unique("g"))
        with pytest.raises(TransportError):
            consumer.seek(TopicPartition(topic, 0), 0)

    def _keys_per_partition(self, partitions: int) -> list[bytes]:
        """Return one key for each partition of a topic with ``partitions`` (Kafka's hash)."""
        keys: dict[int, bytes] = {}
        for n in range(1000):
            keys.setdefault(partition_for(f"k{n}".encode(), partitions), f"k{n}".encode())
        return [keys[p] for p in range(partitions)]

    def test_a_paused_partition_yields_nothing_until_resumed(self, clients: Clients) -> None:
        """Polls skip a paused partition and return the others'; resume picks it up again."""
        topic = self.topic(clients.transport, partitions=2)
        k0, k1 = self._keys_per_partition(2)
        producer = clients.producer()
        self.publish_all(producer, topic, [(k0, b"p0-a"), (k1, b"p1-a")])
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        assert sorted(r.value or b"" for r in self.drain(consumer, 2)) == [b"p0-a", b"p1-a"]
        paused = TopicPartition(topic, 0)
        consumer.pause([paused])
        self.publish_all(producer, topic, [(k0, b"p0-b"), (k1, b"p1-b")])
        assert [r.value for r in self.drain(consumer, 1)] == [b"p1-b"]
        for _ in range(3):
            assert consumer.poll(timeout=self.poll_timeout) == []
        consumer.resume([paused])
        assert [r.value for r in self.drain(consumer, 1)] == [b"p0-b"]

    def test_seek_of_a_paused_partition_applies_on_resume(self, clients: Clients) -> None:
        """A partition sought back and paused is read again from there once resumed."""
        topic = self.topic(clients.transport)
        self.publish_all(clients.producer(), topic, [(b"k", b"a"), (b"k", b"b"), (b"k", b"c")])
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        assert [r.value for r in self.drain(consumer, 3)] == [b"a", b"b", b"c"]
        tp = TopicPartition(topic, 0)
        consumer.seek(tp, 1)
        consumer.pause([tp])
        assert consumer.poll(timeout=self.poll_timeout) == []
        consumer.resume([tp])
        assert [r.value for r in self.drain(consumer, 2)] == [b"b", b"c"]

    def test_regex_subscription_picks_up_topics_created_later(self, clients: Clients) -> None:
        """A ``^`` subscription reads matching topics, including ones created after it."""
        prefix = f"contractrx{uuid.uuid4().hex[:10]}"
        producer = clients.producer()
        first = f"{prefix}.first"
        clients.transport.create_topics([first], partitions=1)
        self.publish_all(producer, first, [(None, b"one")])
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([f"^{prefix}[.].*"])
        assert [r.value for r in self.drain(consumer, 1)] == [b"one"]
        consumer.commit({TopicPartition(first, 0): 1})  # the rebalance resumes from commits
        second = f"{prefix}.second"
        clients.transport.create_topics([second], partitions=1)
        self.publish_all(producer, second, [(None, b"two")])
        records = self.drain(consumer, 1)
        assert [(r.topic, r.value) for r in records] == [(second, b"two")]

    # --- delivery failures -----------------------------------------------------------

    def test_flush_raises_delivery_error_for_an_oversized_record(self, clients: Clients) -> None:
        """A record over the size limit makes flush raise DeliveryError; the others arrive."""
        topic = self.topic(clients.transport)
        producer = clients.producer()
        producer.publish(topic, b"small-1", key=b"k")
        producer.publish(topic, OVERSIZED, key=b"k")
        producer.publish(topic, b"small-2", key=b"k")
        with pytest.raises(DeliveryError, match=r"^1 record\(s\) not delivered") as caught:
            producer.flush(self.patience)
        assert topic in str(caught.value)
        producer.flush(self.patience)  # failures are reported once
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        assert [r.value for r in self.drain(consumer, 2)] == [b"small-1", b"small-2"]

    def test_flush_raises_delivery_error_for_an_invalid_topic_name(self, clients: Clients) -> None:
        """Publishing to an illegal topic name makes flush raise DeliveryError naming it."""
        producer = clients.producer()
        producer.publish("not a legal topic!", b"v", key=b"k")
        with pytest.raises(DeliveryError, match="not a legal topic!"):
            producer.flush(self.patience)

    def test_publish_records_queues_a_batch_as_publish_would_each(self, clients: Clients) -> None:
        """A batch queued in one call arrives in order with its headers; failures at flush."""
        topic = self.topic(clients.transport)
        producer = clients.producer()
        batch = [
            (f"id-{n}", topic, b"k", OVERSIZED if n == 2 else f"v{n}".encode(),
             (("choreo-seq", str(n).encode()),))
            for n in range(5)
        ]  # fmt: skip
        publish_records(producer, batch)
        with pytest.raises(DeliveryError, match=r"^1 record\(s\) not delivered"):
            producer.flush(self.patience)
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        records = self.drain(consumer, 4)
        assert [r.value for r in records] == [b"v0", b"v1", b"v3", b"v4"]
        expected = [(("choreo-seq", seq),) for seq in (b"0", b"1", b"3", b"4")]
        assert [r.headers for r in records] == expected
        producer.close()
        with pytest.raises(TransportClosedError):
            publish_records(producer, batch[:1])

    # --- lifecycle and administration ------------------------------------------------

    def test_use_after_close_raises_transport_closed(self, clients: Clients) -> None:
        """Every call on a closed producer or consumer raises TransportClosedError."""
        topic = self.topic(clients.transport)
        producer = clients.producer()
        producer.close()
        producer.close()  # closing twice is fine
        with pytest.raises(TransportClosedError):
            producer.publish(topic, b"v")
        with pytest.raises(TransportClosedError):
            producer.flush()
        consumer = clients.consumer(unique("g"))
        consumer.subscribe([topic])
        consumer.close()
        consumer.close()
        calls: list[Callable[[], object]] = [
            lambda: consumer.poll(timeout=0.1),
            lambda: consumer.commit({TopicPartition(topic, 0): 0}),
            lambda: consumer.subscribe([topic]),
            lambda: consumer.seek(TopicPartition(topic, 0), 0),
            consumer.assignment,
        ]
        for call in calls:
            with pytest.raises(TransportClosedError):
                call()

    def test_create_topics_is_idempotent_and_listed(self, transport: Transport) -> None:
        """Creating existing topics again is not an error; both are listed afterwards."""
        names = [unique("a"), unique("b")]
        transport.create_topics(names[:1], partitions=2)
        transport.create_topics(names, partitions=2)
        transport.create_topics(names, partitions=2)
        listed = transport.list_topics()
        assert set(names) <= set(listed)
        assert not [name for name in listed if name.startswith("__")]


class TransactionContract(ContractBase):
    """What a transport with transactions does: atomic records and offsets, aborts, fencing."""

    # --- transactions ----------------------------------------------------------------

    def _consume_inputs(self, clients: Clients, count: int) -> tuple[str, str, Consumer]:
        """Publish ``count`` input records and read them in a new group."""
        source = self.topic(clients.transport, prefix="in")
        inputs = [(None, f"in-{n}".encode()) for n in range(count)]
        self.publish_all(clients.producer(), source, inputs)
        group = unique("g")
        consumer = clients.consumer(group)
        consumer.subscribe([source])
        assert len(self.drain(consumer, count)) == count
        return source, group, consumer

    def test_committed_transaction_is_visible_with_its_offsets(self, clients: Clients) -> None:
        """A committed transaction's records become visible and its group offsets stick."""
        source, group, consumer = self._consume_inputs(clients, 3)
        sink = self.topic(clients.transport, prefix="out")
        producer = clients.transactional(unique("tx"))
        assert producer.transactional
        producer.begin_transaction()
        producer.publish(sink, b"out-0", key=b"k")
        producer.publish(sink, b"out-1", key=b"k")
        producer.send_offsets_to_transaction({TopicPartition(source, 0): 3}, consumer)
        producer.commit_transaction()
        reader = clients.consumer(unique("g"))
        reader.subscribe([sink])
        assert [r.value for r in self.drain(reader, 2)] == [b"out-0", b"out-1"]
        consumer.close()
        self.publish_all(clients.producer(), source, [(None, b"in-next")])
        resumed = clients.consumer(group)
        resumed.subscribe([source])
        assert [r.value for r in self.drain(resumed, 1)] == [b"in-next"]

    def test_aborted_transaction_is_invisible_and_keeps_offsets(self, clients: Clients) -> None:
        """An aborted transaction's records never show and its group offsets are not committed."""
        source, group, consumer = self._consume_inputs(clients, 2)
        sink = self.topic(clients.transport, prefix="out")
        producer = clients.transactional(unique("tx"))
        producer.begin_transaction()
        producer.publish(sink, b"aborted", key=b"k")
        producer.send_offsets_to_transaction({TopicPartition(source, 0): 2}, consumer)
        producer.abort_transaction()
        producer.begin_transaction()
        producer.publish(sink, b"committed", key=b"k")
        producer.commit_transaction()
        reader = clients.consumer(unique("g"))
        reader.subscribe([sink])
        assert [r.value for r in self.drain(reader, 1)] == [b"committed"]
        assert reader.poll(timeout=self.poll_timeout) == []
        consumer.close()
        again = clients.consumer(group)
        again.subscribe([source])
        assert [r.value for r in self.drain(again, 2)] == [b"in-0", b"in-1"]

    def test_transactional_producer_refuses_to_publish_outside_a_transaction(
        self, clients: Clients
    ) -> None:
        """A transactional producer raises TransactionError when no transaction is open."""
        producer = clients.transactional(unique("tx"))
        with pytest.raises(TransactionError):
            producer.publish(self.topic(clients.transport), b"v", key=b"k")

    def test_plain_producer_refuses_transactions(self, clients: Clients) -> None:
        """A producer without a transactional id is not transactional; begin raises if offered."""
        producer = clients.producer()
        assert not supports_transactions(producer)
        if isinstance(producer, TransactionalProducer):
            with pytest.raises(TransactionError):
                producer.begin_transaction()

    def test_a_newer_producer_with_the_same_id_fences_the_older(self, clients: Clients) -> None:
        """Creating a producer with a transactional id fences the older one: fatal error."""
        transactional_id = unique("tx")
        topic = self.topic(clients.transport)
        older = clients.transactional(transactional_id)
        newer = clients.transactional(transactional_id)
        with pytest.raises(TransactionError) as raised:
            older.begin_transaction()
            older.publish(topic, b"zombie", key=b"k")
            older.commit_transaction(self.patience)
        assert raised.value.fatal
        newer.begin_transaction()
        newer.publish(topic, b"live", key=b"k")
        newer.commit_transaction(self.patience)
        reader = clients.consumer(unique("g"))
        reader.subscribe([topic])
        assert [r.value for r in self.drain(reader, 1)] == [b"live"]


def _assert_round_tripped(record: Record, topic: str, keys: list[bytes]) -> None:
    """Assert a record of the keyed round trip came back as published (see its test)."""
    seq = int(dict(record.headers)["choreo-seq"])
    assert record.topic == topic
    assert record.value == f"v{seq}".encode()
    assert record.key == keys[seq % 5]
    assert record.headers == (("choreo-seq", str(seq).encode()), ("choreo-key", record.key))
    assert record.timestamp_ms > 0


def _assert_in_publish_order(mine: list[Record]) -> None:
    """Assert one key's records are its six, in publish order, from one partition."""
    seqs = [int(dict(r.headers)["choreo-seq"]) for r in mine]
    assert seqs == sorted(seqs) and len(seqs) == 6
    assert len({r.partition for r in mine}) == 1
    assert [r.offset for r in mine] == sorted(r.offset for r in mine)
