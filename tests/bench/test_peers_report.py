"""The peers benchmark's pure parts: the ceiling's ids and headers, state merging, the report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.peers import choreography as ch  # noqa: E402
from bench.peers.raw_confluent import ceiling_headers  # noqa: E402
from bench.peers.report import add_ratios, combine, targets  # noqa: E402
from bench.peers.shape import merge_states  # noqa: E402
from choreo.runtime import derived_event_id  # noqa: E402


def test_ceiling_derives_event_ids_as_choreo_does() -> None:
    """The ceiling's inlined uuid5 equals choreo's derived_event_id of (parent, step, 0)."""
    build = ceiling_headers()
    parent = "0b7a3f0e-2d7c-4b51-9a55-3f8b0c4a9e11"
    headers = dict(
        build(ch.ORDER_CREATED, ch.INVENTORY_RESERVED, b"order-1", parent.encode(), b"1")
    )
    assert headers[ch.H_ID].decode() == derived_event_id(parent, "inventory.reserve", 0)
    assert headers[ch.H_CAUSE] == parent.encode()
    assert headers[ch.H_ROLE] == b"step"
    failed = dict(build(ch.INVENTORY_RELEASED, ch.ORDER_FAILED, b"order-1", b"x", b"1"))
    assert failed[ch.H_ROLE] == b"failed"
    assert failed[ch.H_STEP] == b"order.start"  # reject undoes the saga: choreo names its start
    released = dict(build(ch.PAYMENT_DECLINED, ch.INVENTORY_RELEASED, b"o", b"x", b"1"))
    assert released[ch.H_ROLE] == b"compensation"
    assert released[ch.H_STEP] == b"inventory.reserve"  # a compensation names what it undid


def test_replica_states_merge_to_each_orders_furthest_state() -> None:
    """Two replicas that each saw part of an order's events merge to its latest state."""
    merged = merge_states(
        [
            {"inventory": {"o1": "reserved", "o2": "released"}},
            {"inventory": {"o1": "released", "o2": "reserved"}, "order": {"o1": "failed"}},
        ]
    )
    assert merged == {"inventory": {"o1": "released", "o2": "released"}, "order": {"o1": "failed"}}


def _run(impl: str, sagas_per_s: float, cpu: float, partitions: int = 1) -> dict[str, object]:
    return {
        "impl": impl,
        "sagas": 100,
        "partitions": partitions,
        "replicas": 1,
        "status": "ok",
        "state_check": "ok",
        "sagas_per_s": sagas_per_s,
        "cpu_ms_per_saga": cpu,
        "broker_cpu_ms_per_saga": 1.0,
        "postgres_cpu_ms_per_saga": None,
        "latency_ms": {"p50": 10.0, "p99": 20.0},
    }


def test_repeats_give_spreads_and_ratios_against_the_same_cell() -> None:
    """Medians and min/max over repeats; ratios of medians and of paired repeats."""
    ceiling = combine([_run("ceiling", v, c) for v, c in ((100, 0.2), (120, 0.1), (80, 0.3))])
    choreo = combine([_run("choreo-confluent", v, c) for v, c in ((90, 0.2), (60, 0.2), (40, 0.3))])
    fast = combine([_run("faststream", 10, 2.0)])
    rows = [ceiling, choreo, fast]
    add_ratios(rows)
    assert ceiling["spread"]["sagas_per_s"] == {"min": 80, "median": 100, "max": 120}
    assert choreo["sagas_per_s"] == 60 and choreo["repeats"] == 3
    assert choreo["vs_ceiling"]["sagas_per_s"] == 0.6
    assert choreo["vs_ceiling"]["cpu_ms_per_saga"] == 1.0
    assert choreo["vs_ceiling"]["paired_sagas_per_s"] == {"min": 0.5, "median": 0.5, "max": 0.9}
    lines = targets(rows)
    assert "choreo service CPU/saga <= 1.1x ceiling: 1.00x ✅" in lines[0]
    assert "choreo CPU/saga <= 0.2x FastStream: 0.10x ✅" in lines[0]


def test_target_line_gives_the_python_and_librdkafka_thread_split() -> None:
    """The ceiling target names both thread kinds' CPU per saga and their ratios."""
    ceiling = {**_run("ceiling", 100, 0.3), "python_cpu_ms_per_saga": 0.2}
    ceiling["rdkafka_cpu_ms_per_saga"] = 0.1
    choreo = {**_run("choreo-confluent", 100, 0.3), "python_cpu_ms_per_saga": 0.25}
    choreo["rdkafka_cpu_ms_per_saga"] = 0.05
    rows = [combine([ceiling]), combine([choreo])]
    add_ratios(rows)
    assert rows[1]["python_cpu_ms_per_saga"] == 0.25
    line = targets(rows)[0]
    assert "Python threads 0.250 vs 0.200 ms = 1.25x" in line
    assert "librdkafka threads 0.050 vs 0.100 ms = 0.50x" in line


def test_a_baseline_checkouts_rows_are_compared_with_this_ones() -> None:
    """Rows <impl>@base (run from --baseline-tree) get a line against this checkout's."""
    ceiling = combine([_run("ceiling", 100, c) for c in (0.2, 0.2, 0.2)])
    choreo = combine([_run("choreo-confluent", 100, c) for c in (0.22, 0.24, 0.3)])
    base = combine([_run("choreo-confluent@base", 100, c) for c in (0.2, 0.3, 0.3)])
    rows = [ceiling, choreo, base]
    add_ratios(rows)
    assert base["vs_ceiling"]["cpu_ms_per_saga"] == 1.5
    line = targets(rows)[0]
    assert "choreo service CPU/saga against the baseline tree's: 0.8x" in line
    assert "(repeat by repeat 0.80-1.10x)" in line
    assert "the baseline tree's against the ceiling 1.5x" in line


def test_run_peers_adds_the_baseline_rows_of_another_checkout(tmp_path: Path) -> None:
    """--baseline-tree DIR adds <impl>@base for each --baseline-only; DIR must be a checkout."""
    spec = importlib.util.spec_from_file_location("run_peers", REPO_ROOT / "bench" / "run_peers.py")
    assert spec is not None and spec.loader is not None
    run_peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_peers)
    args = run_peers.parse(
        ["--only", "ceiling,choreo-confluent", "--baseline-tree", str(REPO_ROOT)]
    )
    assert args.only == ["ceiling", "choreo-confluent", "choreo-confluent@base"]
    with pytest.raises(SystemExit):
        run_peers.parse(["--baseline-tree", str(tmp_path)])  # no bench/peers/runner.py
    with pytest.raises(SystemExit):
        run_peers.parse(["--baseline-tree", str(REPO_ROOT), "--baseline-only", "dbos-postgres"])
