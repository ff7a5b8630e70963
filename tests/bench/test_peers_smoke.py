"""Smoke runs of every peer implementation of the benchmark saga (correctness, no timing).

Each implementation runs 20 sagas through ``python -m bench.peers.runner`` in a
subprocess, exactly as ``bench/run_peers.py`` runs it (every service in a process of its
own), on topics with a unique prefix (the benchmark itself uses the bare event names on a
broker of its own); the PostgreSQL peers use the session's PostgreSQL server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.peers import choreography as ch  # noqa: E402
from bench.peers.harness import IMPLEMENTATIONS, KAFKA_FREE, NEEDS_POSTGRES  # noqa: E402
from bench.peers.shape import CHOREOGRAPHED  # noqa: E402
from bench.peers.topics import delete_topics  # noqa: E402

SAGAS = 20
CLIENT_STATS = frozenset({"ceiling-interleaved", "choreo-confluent"})
"""Run with librdkafka statistics (the diagnostic), so both ways of counting are exercised."""


@pytest.fixture(scope="module")
def topic_prefix(kafka_bootstrap: str) -> Iterator[str]:
    """Yield a topic prefix unique to this module; delete its topics afterwards."""
    from bench.peers.orchestrated_impl import SHAPE as ORCHESTRATED

    prefix = f"peers-smoke-{uuid.uuid4().hex[:10]}."
    yield prefix
    types = {*CHOREOGRAPHED.event_types, *ORCHESTRATED.event_types}
    delete_topics(kafka_bootstrap, [prefix + t for t in sorted(types)])


def run_harness(
    impl: str, bootstrap: str, prefix: str, tmp_path: Path, postgres_url: str | None = None
) -> dict[str, Any]:
    """Run one implementation with the harness in a subprocess and return its result."""
    out = tmp_path / f"{impl}.json"
    command = [
        sys.executable, "-m", "bench.peers.runner",
        "--impl", impl, "--sagas", str(SAGAS), "--partitions", "2",
        "--bootstrap", bootstrap, "--topic-prefix", prefix, "--recreate-topics",
        "--warmup", "3", "--budget", "120", "--out", str(out),
        *(["--postgres-url", postgres_url] if postgres_url else []),
        *(["--client-stats"] if impl in CLIENT_STATS else []),
    ]  # fmt: skip
    done = subprocess.run(
        command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.exists(), f"{impl} wrote no result:\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_expected_outcomes_cover_every_path() -> None:
    """The order ids of a run take every path of the saga, in roughly the intended shares."""
    paths = [ch.expected_outcome(f"order-{i:06d}") for i in range(10_000)]
    assert set(paths) == {"completed", "declined", "dispatch", "reservation"}
    assert 1500 < paths.count("declined") < 2500
    assert 200 < paths.count("dispatch") < 600


def test_fastavro_helpers_write_what_choreo_writes() -> None:
    """The peers' fastavro single-object bytes equal choreo's codec output for every type."""
    from choreo.avro.codec import SingleObjectCodec
    from choreo.avro.loader import load_directory

    choreo_codec = SingleObjectCodec(load_directory(REPO_ROOT / "schemas"))
    codec = ch.AvroCodec()
    state: dict[str, str] = {}
    created = ch.order_created("order-000001", 1, 1_700_000_000_000)
    data = codec.encode(ch.ORDER_CREATED, created)
    assert data == choreo_codec.encode(ch.ORDER_CREATED, created)
    datum = created
    for step in (ch.reserve, ch.charge, ch.create_shipment, ch.dispatch, ch.cancel, ch.refund,
                 ch.release, ch.reject, ch.complete):  # fmt: skip
        event_type, out = step(state, datum)
        encoded = codec.encode(event_type, out)
        assert encoded == choreo_codec.encode(event_type, out)
        assert codec.decode(encoded) == (event_type, out)
        datum = {**created, **out}


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_implementation_runs_every_saga_to_its_expected_end(
    impl: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Every saga ends once, with the terminal event and service states its id decides.

    About 5-10 s per implementation (over the ~10 s rule for some): four or five service
    processes start, import their client libraries and join their consumer groups (the
    test broker adds no initial rebalance delay) before the 20 sagas run.
    """
    url = request.getfixturevalue("postgres_url") if impl in NEEDS_POSTGRES else None
    result = run_harness(impl, kafka_bootstrap, topic_prefix, tmp_path, url)
    order_ids = [f"order-{i:06d}" for i in range(SAGAS)]
    expected_paths: dict[str, int] = {}
    for order_id in order_ids:
        path = ch.expected_outcome(order_id)
        expected_paths[path] = expected_paths.get(path, 0) + 1
    assert result["status"] == "ok", result
    assert result["ended"] == SAGAS
    assert result["paths"] == expected_paths
    assert result["wrong_outcomes"] == 0
    assert result["duplicate_terminal_events"] == 0
    assert result["state_check"] == "ok"
    assert result["sagas_per_s"] > 0 and result["latency_ms"]["p50"] > 0
    assert result["cpu_ms_per_saga"] > 0
    if impl in KAFKA_FREE:
        assert result["processes"] == 1
    else:  # one process per service, metered apart from the harness
        assert result["processes"] >= 4
        assert result["harness_cpu_ms_per_saga"] > 0
        assert set(result["service_cpu_ms_per_saga_by_service"]) >= set(CHOREOGRAPHED.services)
        rdkafka, python = result["rdkafka_cpu_ms_per_saga"], result["python_cpu_ms_per_saga"]
        assert rdkafka >= 0 and python > 0
        assert abs(rdkafka + python - result["cpu_ms_per_saga"]) < 0.01
    if impl in CLIENT_STATS:  # requests, records and batches of the services' clients
        client = result["client_per_saga"]
        assert client["producer_Produce"] > 0 and client["consumer_Fetch"] > 0
        assert client["producer_txmsgs"] > 0 and client["batch_records"] > 0
        assert client["batches"] > 0
