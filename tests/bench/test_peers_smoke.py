"""Smoke runs of every peer implementation of the benchmark saga (correctness, no timing).

Each implementation runs 20 sagas through ``python -m bench.peers.harness`` in a
subprocess, exactly as ``bench/run_peers.py`` runs it, on topics with a unique prefix (the
benchmark itself uses the bare event names on a broker of its own).
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
from bench.peers.harness import IMPLEMENTATIONS, delete_topics, saga_topics  # noqa: E402

SAGAS = 20


@pytest.fixture(scope="module")
def topic_prefix(kafka_bootstrap: str) -> Iterator[str]:
    """Yield a topic prefix unique to this module; delete its topics afterwards."""
    prefix = f"peers-smoke-{uuid.uuid4().hex[:10]}."
    yield prefix
    delete_topics(kafka_bootstrap, saga_topics(prefix))


def run_harness(impl: str, bootstrap: str, prefix: str, tmp_path: Path) -> dict[str, Any]:
    """Run one implementation with the harness in a subprocess and return its result."""
    out = tmp_path / f"{impl}.json"
    command = [
        sys.executable, "-m", "bench.peers.harness",
        "--impl", impl, "--sagas", str(SAGAS), "--partitions", "2",
        "--bootstrap", bootstrap, "--topic-prefix", prefix, "--recreate-topics",
        "--warmup", "3", "--budget", "120", "--out", str(out),
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
    impl: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Every saga ends once, with the terminal event and service states its id decides."""
    result = run_harness(impl, kafka_bootstrap, topic_prefix, tmp_path)
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
