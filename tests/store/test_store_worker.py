"""Stores under a real worker: the relay, the unshared-store guard and ``choreo run --store``.

Real Kafka broker, real PostgreSQL server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from choreo.errors import ConfigurationError
from choreo.runtime import Worker, WorkerConfig
from choreo.store import OutboxRecord, SqliteStore
from choreo.store.guard import group_members
from choreo.store.postgres import POSTGRES_MIGRATIONS, PostgresStore
from choreo.transports.base import Record
from choreo.transports.factory import open_transport
from tests.runtime.fixtures.serdes import avro_serde
from tests.runtime.fixtures.shop import SCHEMAS_DIR, build_shop

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.kafka


def _read_all(bootstrap: str, topic: str, want: int, timeout: float = 60.0) -> list[Record]:
    """Return the records of ``topic`` once ``want`` arrived (or what came by ``timeout``)."""
    transport = open_transport("confluent", bootstrap=bootstrap)
    consumer = transport.consumer(f"reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    found: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(found) < want and time.monotonic() < deadline:
        found.extend(consumer.poll(100, 0.5))
    consumer.close()
    return found


def _rows(n: int, topic: str, prefix: str) -> list[OutboxRecord]:
    return [
        OutboxRecord(f"{prefix}-{i}", topic, b"cid-%d" % (i % 2), b"v%d" % i, [("n", b"%d" % i)])
        for i in range(n)
    ]


def _run_in_thread(worker: Worker) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def test_rows_of_a_dead_replica_are_published_by_a_live_one_never_before_commit(
    kafka_bootstrap: str, postgres_url: str, unique_name: Callable[[str], str]
) -> None:
    """The relay publishes committed rows another writer left; uncommitted rows stay unseen."""
    schema = f"relay_{uuid.uuid4().hex[:10]}"
    group = unique_name("inventory")
    topic = unique_name("relayed")
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    transport.create_topics([topic])
    origin = f"worker.{group}"

    dead = PostgresStore(postgres_url, schema=schema)  # commits, then dies before publishing
    dead.begin()
    dead.enqueue(origin, _rows(6, topic, "dead"))
    dead.commit()
    dead.close()
    writer = PostgresStore(postgres_url, schema=schema)  # a replica mid-transaction
    writer.begin()
    writer.enqueue(origin, _rows(3, topic, "open"))

    live_store = PostgresStore(postgres_url, schema=schema)
    worker = Worker(
        build_shop().inventory,
        transport,
        avro_serde(),
        config=WorkerConfig(group_id=group, relay_min_age=1.0, relay_interval=0.2),
        inbox=live_store,
    )
    thread, stop = _run_in_thread(worker)
    try:
        relayed = _read_all(kafka_bootstrap, topic, want=6)
        assert [r.value for r in relayed] == [b"v%d" % i for i in range(6)]  # in stored order
        time.sleep(2.5)  # past the relay's minimum age: the open transaction's rows stay unseen
        assert len(_read_all(kafka_bootstrap, topic, want=7, timeout=3)) == 6
        writer.commit()
        after = _read_all(kafka_bootstrap, topic, want=9)
    finally:
        stop.set()
        thread.join(30)
        live_store.close()
        writer.close()
    ids = [dict(r.headers)["n"] for r in after]
    assert sorted(ids) == sorted([b"%d" % i for i in range(6)] + [b"0", b"1", b"2"])
    assert len(after) == 9
    check = PostgresStore(postgres_url, schema=schema)
    assert check.pending(origin) == []  # deleted once acknowledged
    check.close()


def test_an_unshared_store_refuses_a_second_live_group_member(
    kafka_bootstrap: str, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    """A second SQLite replica in a live group fails with a message naming a shared store."""
    group = unique_name("inventory")
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    shop = build_shop()
    first = Worker(
        shop.inventory,
        transport,
        avro_serde(),
        config=WorkerConfig(group_id=group),
        inbox=SqliteStore(tmp_path / "a.db"),
    )
    thread, stop = _run_in_thread(first)
    try:
        deadline = time.monotonic() + 60
        while not group_members(transport, group):
            assert time.monotonic() < deadline, "the first replica never joined its group"
            time.sleep(0.2)
        second = Worker(
            shop.inventory,
            transport,
            avro_serde(),
            config=WorkerConfig(group_id=group),
            inbox=SqliteStore(tmp_path / "b.db"),
        )
        with pytest.raises(ConfigurationError, match="shared store") as refused:
            second.start()
        assert "postgresql://" in str(refused.value)
        second.close()
    finally:
        stop.set()
        thread.join(30)


def test_choreo_run_takes_its_store_from_the_environment_and_hides_the_password(
    postgres_url: str, tmp_path: Path
) -> None:
    """``CHOREO_STORE=postgresql://…`` opens the PostgreSQL store; the password never shows."""
    schema = f"cli_{uuid.uuid4().hex[:10]}"
    secret = "s3cr3t-pw"
    user_url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert secret in user_url  # the session server trusts local users: any password works
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "250",
        "CHOREO_STORE": f"{user_url}?schema={schema}",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "choreo",
            "--log-level",
            "INFO",
            "run",
            "tests.runtime.fixtures.cli_app:inventory",
            "--transport",
            "memory",
            "--schemas",
            str(SCHEMAS_DIR),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        lines.append(line)
        if "worker started" in line or time.monotonic() > deadline:
            break
    process.terminate()
    rest, _ = process.communicate(timeout=30)
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "worker started" in output
    assert "PostgresStore(" in output and ":***@" in output
    assert secret not in output
    check = PostgresStore(postgres_url, schema=schema)
    check.begin()
    row = check.connection.execute(
        "SELECT max(version) FROM choreo_schema_version WHERE component = 'choreo'"
    ).fetchone()
    check.commit()
    check.close()
    assert row == (POSTGRES_MIGRATIONS[-1].version,)  # every choreo migration applied


def test_the_compose_healthcheck_waits_for_the_services_migrations(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """services.healthcheck fails until the service's migrations are in its store."""
    from services import healthcheck, inventory
    from services.config import ServiceConfig

    schema = f"hc_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("CHOREO_STORE", f"{postgres_url}?schema={schema}")
    assert healthcheck.main(["inventory"]) == 1
    service = inventory.create(ServiceConfig(stock={"mug": 1}))
    store = PostgresStore(postgres_url, schema=schema)
    assert store.migrate("service:inventory", service.migrations) == [1, 2]
    store.close()
    assert healthcheck.main(["inventory"]) == 0
    assert healthcheck.main(["payment"]) == 1
