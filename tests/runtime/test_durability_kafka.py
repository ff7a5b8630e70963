"""Durability on a real broker: fencing, backoffs, revocations, hand-over, EOS under SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from choreo.choreography.service import Retry, Saga, Service
from choreo.errors import TransientError
from choreo.model.envelope import Header, headers_to_dict
from choreo.runtime import Middleware, Publisher, Worker, WorkerConfig
from choreo.store.postgres import PostgresStore
from choreo.transports.base import Record, TopicPartition, Transport
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

from .fixtures.events import OrderCompleted, OrderFailed, OrderPlaced, StockReserved
from .fixtures.run_process import RunProcess, inventory_on_kafka
from .fixtures.serdes import avro_serde
from .fixtures.shop import build_shop

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
ORDERS = "test.runtime.OrderPlaced"
RESERVED = "test.runtime.StockReserved"
FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300, "fetch.wait.max.ms": 50}


def _prefix() -> str:
    return f"dur{uuid.uuid4().hex[:10]}."


def _transport(kind: str, bootstrap: str, **consumer: Any) -> Transport:
    config = KafkaConfig(
        bootstrap_servers=bootstrap, client_id="choreo-durability", consumer={**FAST, **consumer}
    )
    return open_transport(kind, config=config)


def _config(prefix: str, **extra: Any) -> WorkerConfig:
    return WorkerConfig(
        group_id=f"{prefix}inventory",
        poll_timeout=0.1,
        topic_naming=lambda t: f"{prefix}{t}",
        deadletter_naming=lambda s: f"{prefix}deadletter.{s}",
        **extra,
    )


def _publish_orders(transport: Transport, prefix: str, count: int, partitions: int = 1) -> None:
    shop = build_shop()
    config = _config(prefix, topic_partitions=partitions)
    transport.create_topics([f"{prefix}{ORDERS}"], partitions=partitions)
    publisher = Publisher(shop.orders, transport, avro_serde(), config=config)
    for n in range(count):
        publisher.start(shop.saga, OrderPlaced(f"o{n}", "book", 1, 100))
    publisher.close()


def _read_all(
    bootstrap: str, topic: str, expected: int, *, isolation: str = "read_committed"
) -> list[Record]:
    """Read ``topic`` from the start in a fresh group until ``expected`` records or quiet.

    Quiet counts from the reader's assignment, not its start: a slow join must not end
    the read before it read anything (``expected`` 0 asserts an empty topic).
    """
    reader = _transport("confluent", bootstrap, **{"isolation.level": isolation}).consumer(
        f"reader-{uuid.uuid4().hex[:8]}"
    )
    reader.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + 60
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        got = reader.poll(500, 0.5)
        records.extend(got)
        if got or not reader.assignment():
            quiet_since = time.monotonic()
        elif len(records) >= expected and time.monotonic() - quiet_since > 3:
            break
    assigned = bool(reader.assignment())
    reader.close()
    assert assigned, f"the reader of {topic} was never assigned its partitions"
    return records


class _Rebalances(Middleware):
    """Records every assignment and revocation the worker sees."""

    def __init__(self) -> None:
        self.assigned: list[list[TopicPartition]] = []
        self.revoked: list[list[TopicPartition]] = []
        self.owned: set[TopicPartition] = set()

    def on_assign(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        self.assigned.append(sorted(partitions))
        self.owned |= set(partitions)

    def on_revoke(self, worker: Worker, partitions: list[TopicPartition]) -> None:
        self.revoked.append(sorted(partitions))
        self.owned -= set(partitions)


class _Running:
    """A worker running ``run()`` on a thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _wait(condition: Any, what: str, timeout: float = 60.0) -> float:
    """Wait until ``condition()``; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


# --- a fenced producer ends the process ---------------------------------------------------


def test_a_fenced_exactly_once_worker_exits_non_zero_saying_why(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A second producer with the worker's transactional id fences it: exit 1 with the reason."""
    prefix = _prefix()
    cli = RunProcess(
        *inventory_on_kafka(kafka_bootstrap, tmp_path / "inventory.db", prefix), "--exactly-once"
    )
    transport = _transport("confluent", kafka_bootstrap)
    try:
        _wait(lambda: f"assigned {prefix}" in cli.output, "assignment")
        transactional_id = f"choreo.inventory.{prefix}inventory.inventory-0"
        zombie_killer = transport.producer(transactional_id=transactional_id)  # fences the CLI
        _publish_orders(transport, prefix, 1)
        code = cli.popen.wait(60)
        zombie_killer.close()
    finally:
        if cli.popen.poll() is None:
            cli.popen.kill()
            cli.popen.wait(30)
    cli.reader.join(5)
    assert code == 1, cli.output
    assert f"transactional id {transactional_id!r}" in cli.output
    assert "give every replica its own instance_id" in cli.output
    assert "Error: worker inventory stopped" in cli.output
    # said once: not also as librdkafka's FATAL line, a worker log line or a traceback
    assert cli.output.count(repr(transactional_id)) == 1, cli.output
    assert "CRITICAL" not in cli.output and "Traceback" not in cli.output, cli.output
    assert _read_all(kafka_bootstrap, f"{prefix}{RESERVED}", 0) == []


# --- a long retry backoff does not make the group rebalance --------------------------------


def _flaky_service(failures: int, backoff: float) -> tuple[Service, Counter[str]]:
    """A one-step service failing ``failures`` times per order before it succeeds."""
    calls: Counter[str] = Counter()
    saga = Saga("Fulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    service = Service("inventory", sagas=[saga])
    retry = Retry(
        max_attempts=failures + 1,
        backoff=backoff,
        multiplier=1.0,
        max_backoff=backoff,
        jitter=False,
    )

    @service.step(on=OrderPlaced, emits=StockReserved, retry=retry)
    def reserve(event: OrderPlaced) -> StockReserved:
        calls[event.order_id] += 1
        if calls[event.order_id] <= failures:
            raise TransientError("the stock service is down")
        return StockReserved(event.order_id, event.sku, event.quantity)

    return service, calls


@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_a_retry_backoff_longer_than_max_poll_interval_causes_no_rebalance(
    kafka_bootstrap: str, kind: str
) -> None:
    """Two 4 s backoffs (8 s > max.poll.interval.ms=7 s): paused, polled, never revoked."""
    prefix = _prefix()
    transport = _transport(kind, kafka_bootstrap, **{"max.poll.interval.ms": 7000})
    service, calls = _flaky_service(failures=2, backoff=4.0)
    rebalances = _Rebalances()
    worker = Worker(
        service,
        transport,
        avro_serde(),
        config=_config(prefix, max_inline_backoff=1.0),
        middleware=[rebalances],
    )
    _publish_orders(transport, prefix, 1)
    started = time.monotonic()
    running = _Running(worker)
    try:
        _wait(lambda: calls["o0"] == 3, "the third attempt", timeout=60)
        took = time.monotonic() - started
        _wait(lambda: _read_all(kafka_bootstrap, f"{prefix}{RESERVED}", 1) != [], "output")
        revoked_while_running = list(rebalances.revoked)
    finally:
        running.stop()
    assert running.error is None
    assert took >= 8.0
    assert rebalances.assigned == [[TopicPartition(f"{prefix}{ORDERS}", 0)]]
    assert revoked_while_running == []


# --- records of revoked partitions are never handed out ------------------------------------


SETTLED_S = 2.0
"""How long the revocation test keeps polling after a rebalance has completed."""


def test_a_poll_never_returns_records_of_a_partition_revoked_during_it(
    kafka_bootstrap: str,
) -> None:
    """While members come and go, every record a poll returns is of an assigned partition.

    Three times a second member joins and leaves while records keep arriving on all six
    partitions. The first member polls (and each poll is checked) through every rebalance
    until it has completed, then ``SETTLED_S`` longer: the polls that could return a record
    fetched before its partition was revoked are the ones during and right after the
    rebalance. (It polled fixed 10 s and 8 s windows before, 54 s in all, most of it on a
    settled assignment that cannot show the defect.)
    """
    prefix = _prefix()
    topic = f"{prefix}stream"
    transport = _transport("confluent", kafka_bootstrap)
    transport.create_topics([topic], partitions=6)
    stop = threading.Event()

    def produce() -> None:
        producer = transport.producer()
        n = 0
        while not stop.is_set():
            for _ in range(50):
                producer.publish(topic, b"v", key=f"k{n}".encode())
                n += 1
            producer.flush(10)
            time.sleep(0.01)
        producer.close()

    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()
    revocations: list[list[TopicPartition]] = []
    consumer = transport.consumer(f"{prefix}g")
    consumer.subscribe([topic], on_revoke=revocations.append)
    foreign = 0
    polls = 0

    def poll_checked(seconds: float) -> None:
        nonlocal foreign, polls
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            records = consumer.poll(200, 0.1)
            owned = set(consumer.assignment())
            foreign += sum(1 for r in records if r.topic_partition not in owned)
            polls += 1

    def churn_until(done: Callable[[], bool], what: str, other: Any = None) -> None:
        """Poll (checked) until ``done()``, then for ``SETTLED_S`` more: the rebalance and
        the polls right after it, which is when a record fetched before a revocation could
        slip out, are all inside the checked window."""
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, f"{what} did not happen within 60 s"
            if other is not None:
                other.poll(100, 0.05)
            poll_checked(0.2)
        settled = time.monotonic() + SETTLED_S
        while time.monotonic() < settled:
            if other is not None:
                other.poll(100, 0.05)
            poll_checked(0.2)

    everything = {TopicPartition(topic, p) for p in range(6)}
    try:
        _wait(lambda: consumer.poll(200, 0.1) is not None and consumer.assignment(), "assign")
        for cycle in range(3):
            other = transport.consumer(f"{prefix}g")
            other.subscribe([topic])
            joined = 2 * cycle + 1  # revocations once the other member has joined

            def shared(other: Any = other, joined: int = joined) -> bool:
                mine, theirs = set(consumer.assignment()), set(other.assignment())
                return len(revocations) >= joined and bool(theirs) and mine | theirs == everything

            churn_until(shared, "the join's rebalance", other)
            other.close()

            def alone(left: int = joined + 1) -> bool:
                return len(revocations) >= left and set(consumer.assignment()) == everything

            churn_until(alone, "the leave's rebalance")
            assert len(revocations) >= 2 * cycle + 2  # one when it joins, one when it leaves
    finally:
        stop.set()
        feeder.join(30)
        consumer.close()
    assert polls > 0
    assert foreign == 0


# --- two replicas hand partitions over cleanly -------------------------------------------


def _counting_inventory() -> tuple[Service, Counter[str]]:
    """A one-step service counting how often each order is handled."""
    calls: Counter[str] = Counter()
    saga = Saga("Fulfilment", start=OrderPlaced, completed=OrderCompleted, failed=OrderFailed)
    service = Service("inventory", sagas=[saga])

    @service.step(on=OrderPlaced, emits=StockReserved)
    def reserve(event: OrderPlaced) -> StockReserved:
        calls[event.order_id] += 1
        time.sleep(0.002)
        return StockReserved(event.order_id, event.sku, event.quantity)

    return service, calls


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_a_joining_replica_takes_over_without_handling_anything_twice(
    kafka_bootstrap: str, postgres_url: str, strategy: str
) -> None:
    """A second replica joins mid-stream (shared PostgreSQL store): every order handled once."""
    prefix = _prefix()
    stores = [PostgresStore(postgres_url, schema=prefix[:-1]) for _ in range(2)]
    count = 400
    settings = {"partition.assignment.strategy": strategy}
    transport = _transport("confluent", kafka_bootstrap, **settings)
    _publish_orders(transport, prefix, count, partitions=4)
    service, calls = _counting_inventory()
    first_rebalances = _Rebalances()
    config = _config(prefix, max_poll_records=20, topic_partitions=4)
    first = _Running(
        Worker(
            service,
            transport,
            avro_serde(),
            config=config,
            inbox=stores[0],
            middleware=[first_rebalances],
        )
    )
    _wait(lambda: sum(calls.values()) >= 40, "the first replica's progress")
    other = _transport("confluent", kafka_bootstrap, **settings)
    second = _Running(Worker(service, other, avro_serde(), config=config, inbox=stores[1]))
    try:
        _wait(lambda: len(calls) == count, "every order handled", timeout=120)
        during = list(first_rebalances.revoked)
    finally:
        second.stop()
        first.stop()
        for store in stores:
            store.close()
    assert first.error is None and second.error is None
    assert max(calls.values()) == 1
    out = _read_all(kafka_bootstrap, f"{prefix}{RESERVED}", count)
    assert len({headers_to_dict(r.headers)[Header.EVENT_ID] for r in out}) == count
    all_four = [TopicPartition(f"{prefix}{ORDERS}", p) for p in range(4)]
    if strategy == "cooperative-sticky":
        assert during and all(len(r) < 4 for r in during)  # only the partitions that moved
    else:
        assert all_four in during  # eager: everything is revoked, then reassigned


HANDOVER_S = 10.0
"""The hand-over bound of the static-replica test: well under its 45 s session, so a close
that did not leave the group (the hand-over then waits for the session to expire) fails it
(15 s before; the hand-over takes about 2 s)."""

LEAVE_BOUND_S = 30.0
"""The bound of the hand-over after a close that left the group: still well under the 45 s
session the control waits for, and not outlasted by a loaded machine's rebalance."""


@pytest.mark.parametrize("leave", [True, False])
def test_a_static_replica_that_stops_cleanly_hands_over_at_once(
    kafka_bootstrap: str, postgres_url: str, leave: bool
) -> None:
    """With a 45 s session, the other replica owns every partition seconds after a clean stop.

    Without ``leave_group_on_close`` (the control) it does not within ``HANDOVER_S``: a
    static member's close keeps its partitions until the session times out.
    """
    prefix = _prefix()
    settings = {"session.timeout.ms": 45000}
    transport = _transport("confluent", kafka_bootstrap, **settings)
    _publish_orders(transport, prefix, 4, partitions=4)
    service, _ = _counting_inventory()
    watchers = [_Rebalances(), _Rebalances()]
    stores = [PostgresStore(postgres_url, schema=prefix[:-1]) for _ in range(2)]
    running = [
        _Running(
            Worker(
                service,
                _transport("confluent", kafka_bootstrap, **settings),
                avro_serde(),
                config=_config(
                    prefix,
                    instance_id=f"inventory-{n}",
                    topic_partitions=4,
                    leave_group_on_close=leave,
                ),
                inbox=stores[n],
                middleware=[watchers[n]],
            )
        )
        for n in range(2)
    ]

    def owned(n: int) -> set[TopicPartition]:
        return set(watchers[n].owned)

    try:
        _wait(lambda: len(owned(0)) == 2 and len(owned(1)) == 2, "a 2/2 split", timeout=90)
        running[0].stop()
        if leave:
            took = _wait(lambda: len(owned(1)) == 4, "the hand-over", timeout=LEAVE_BOUND_S)
        else:
            with pytest.raises(AssertionError, match="did not happen"):
                _wait(lambda: len(owned(1)) == 4, "the hand-over", timeout=HANDOVER_S)
            took = 0.0
    finally:
        running[1].stop()
        for store in stores:
            store.close()
    assert took < LEAVE_BOUND_S


# --- exactly-once under SIGKILL --------------------------------------------------------------


def _eos_worker(bootstrap: str, prefix: str, db: Path, *hang: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.runtime.fixtures.eos_worker",
            bootstrap,
            prefix,
            "inventory-0",
            str(db),
            *hang,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test, killed at its end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_exactly_once_survives_a_sigkill_mid_transaction(
    kafka_bootstrap: str, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """Killed inside an open transaction and restarted: 0 duplicates in the committed log."""
    prefix = _prefix()
    count = 60
    transport = _transport("confluent", kafka_bootstrap)
    _publish_orders(transport, prefix, count)
    marker = tmp_path / "in-transaction"
    db = tmp_path / "inventory.db"
    first = _eos_worker(kafka_bootstrap, prefix, db, "3", str(marker))
    processes.append(first)
    _wait(marker.exists, "the third transaction", timeout=90)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    second = _eos_worker(kafka_bootstrap, prefix, db)
    processes.append(second)
    topic = f"{prefix}{RESERVED}"
    try:
        committed = _read_all(kafka_bootstrap, topic, count)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
    ids = Counter(headers_to_dict(r.headers)[Header.EVENT_ID] for r in committed)
    causes = Counter(headers_to_dict(r.headers)[Header.CAUSATION_ID] for r in committed)
    assert len(committed) == count
    assert max(ids.values()) == 1
    assert len(causes) == count
    uncommitted = _read_all(kafka_bootstrap, topic, count, isolation="read_uncommitted")
    assert len(uncommitted) > count  # the killed transaction's records are in the log, aborted
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT order_id) FROM reservations")
        assert rows.fetchone() == (count, count)
