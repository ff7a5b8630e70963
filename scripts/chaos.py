#!/usr/bin/env python3
"""The chaos suite: the example shop under crashes, restarts, poison and zombies; one JSON line.

Runs the five example services (order, inventory, payment, shipping, notification) as
``choreo run`` processes, ``--replicas`` each with static instance ids, on a real Kafka
broker it starts itself (``scripts/kafka_broker.py``; a three-node cluster for the
``cluster-leader`` scenario) and a real PostgreSQL (``$CHOREO_POSTGRES_URL`` or
``scripts/postgres_server.py``) when the services can share a store. Each scenario places
``--orders`` orders on fresh topics (6 partitions) and a fresh database while its fault
happens, then checks: 0 sagas lost, 0 duplicate side effects, stock never below zero,
every saga terminal, ``choreo verify`` clean, tracker state equal to the databases, and in
exactly-once mode 0 duplicate records in the read_committed log.

    python scripts/chaos.py --orders 150 --replicas 2 --scenarios kill-random,poison,sigterm-drain
    python scripts/chaos.py --full --out bench/results/chaos-$(date -u +%Y%m%dT%H%M%SZ).json

Prints ONE JSON line (the totals, plus ``per_scenario``); exits 1 when a figure is not 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from chaos_suite.infra import Kafka, Postgres  # noqa: E402
from chaos_suite.runner import Options, ScenarioRun  # noqa: E402
from chaos_suite.scenarios import FULL_ONLY, SCENARIOS, Scenario  # noqa: E402

FIGURES = (
    "lost",
    "duplicate_side_effects",
    "oversold",
    "not_terminal",
    "verify_findings",
    "tracker_mismatches",
    "duplicate_records",
)
"""The figures that must all be 0."""

COUNTS = ("unexpected_exits", "completed", "failed", "dead_letters")
"""What the run did, summed over the scenarios."""


def shared_store_supported() -> bool:
    """Return whether ``choreo run`` and the order placer take ``--store`` (a shared store)."""
    probes = (
        [str(Path(sys.executable).with_name("choreo")), "run", "--help"],
        [sys.executable, "-m", "services.placer", "--help"],
    )
    for command in probes:
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO, check=False, timeout=60
        )
        if "--store" not in result.stdout:
            return False
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=300, help="orders per scenario")
    parser.add_argument("--replicas", type=int, default=2, help="replicas of every service")
    parser.add_argument(
        "--scenarios",
        default="",
        help=f"comma-separated names among {', '.join(SCENARIOS)} (default: all but "
        f"{', '.join(FULL_ONLY)})",
    )
    parser.add_argument("--full", action="store_true", help="every scenario, cluster included")
    parser.add_argument("--out", type=Path, help="also write the JSON (indented) to this file")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the sagas after the last order (less when none ends for 75 s)",
    )
    parser.add_argument(
        "--store",
        choices=("auto", "postgresql", "sqlite"),
        default="auto",
        help="postgresql: one shared database per scenario; sqlite: one file per replica",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (the services' and brokers' logs)"
    )
    parser.add_argument(
        "--service-log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="WARNING",
        help="the services' log level (DEBUG with CHOREO_KAFKA_PRODUCER_DEBUG=eos,... "
        "shows librdkafka's debug lines in the kept logs)",
    )
    args = parser.parse_args(argv)
    if args.full:
        args.names = list(SCENARIOS)
    elif args.scenarios:
        args.names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    else:
        args.names = [n for n in SCENARIOS if n not in FULL_ONLY]
    unknown = [n for n in args.names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose among {list(SCENARIOS)}")
    if args.orders < 1 or args.replicas < 1:
        parser.error("--orders and --replicas must be at least 1")
    if args.store == "sqlite" and args.replicas > 1:
        # each replica would hold its own stock and inbox: the figures would count the
        # split state (e.g. stock "below zero" over two files), not the services' faults
        parser.error("a SQLite store cannot be shared: use --replicas 1 or --store postgresql")
    return args


def total(results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Return the report: the sum of every figure, the run's facts and each scenario."""
    report: dict[str, Any] = {
        "orders": sum(r["orders"] for r in results),
        "replicas": meta["replicas"],
        "scenarios": [r["name"] for r in results],
    }
    for key in (*FIGURES, *COUNTS):
        report[key] = sum(int(r[key]) for r in results)
    report["harness_errors"] = [r["name"] for r in results if "error" in r]
    report["ok"] = all(report[key] == 0 for key in FIGURES) and not report["harness_errors"]
    report["durations"] = {
        "total_s": meta["total_s"],
        "infra_start_s": meta["infra_start_s"],
        **{r["name"]: r["durations"]["total_s"] for r in results},
    }
    report.update({k: v for k, v in meta.items() if k not in ("total_s", "infra_start_s")})
    report["per_scenario"] = results
    return report


def play_one(scenario: Scenario, options: Options, kafka: Kafka, run_id: str) -> dict[str, Any]:
    """Run one scenario; a harness failure becomes a result with ``error`` (never hidden)."""
    run = ScenarioRun(scenario, options, kafka, run_id)
    try:
        result = run.run()
    except Exception:
        result = {"name": scenario.name, "error": traceback.format_exc()[-3000:]}
        result.update(dict.fromkeys((*FIGURES, *COUNTS), 0))
        result.update(orders=run.placer.count(), durations={"total_s": 0.0}, timeline=run.timeline)
    finally:
        run.close()
    log = logging.getLogger("choreo.chaos")
    log.info("%s: %s", scenario.name, {k: result[k] for k in FIGURES})
    return result


def play(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run every chosen scenario and return the report."""
    started = time.monotonic()
    use_pg = args.store == "postgresql" or (args.store == "auto" and shared_store_supported())
    if not use_pg and args.replicas > 1:
        raise SystemExit("no shared store available: a SQLite run needs --replicas 1")
    postgres = Postgres() if use_pg else None
    run_id = uuid.uuid4().hex[:6]
    results: list[dict[str, Any]] = []
    infra_s = postgres.start() if postgres else 0.0
    kafka: Kafka | None = None
    logs = workdir if args.keep else None  # the brokers' logs go with the services'
    try:
        for name in args.names:
            scenario = SCENARIOS[name]
            if kafka is None or kafka.cluster_mode != scenario.cluster:
                if kafka is not None:
                    kafka.stop(logs)
                kafka = Kafka(cluster=scenario.cluster)
                infra_s += kafka.start()
            options = Options(
                orders=args.orders,
                replicas=args.replicas,
                workdir=workdir,
                seed=args.seed,
                settle_timeout=args.settle_timeout,
                store_url=postgres.new_database if postgres else None,
                log_level=args.service_log_level,
            )
            results.append(play_one(scenario, options, kafka, run_id))
            if "error" in results[-1]:  # the broker may be the casualty: start afresh
                kafka.stop(logs)
                kafka = None
    finally:
        if kafka is not None:
            kafka.stop(logs)
        if postgres is not None:
            postgres.stop()
    meta = {
        "replicas": args.replicas,
        "orders_per_scenario": args.orders,
        "store": "postgresql" if use_pg else "sqlite-file-per-replica",
        "partitions": 6,
        "total_s": round(time.monotonic() - started, 1),
        "infra_start_s": round(infra_s, 1),
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }
    return total(results, meta)


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print one JSON line, return 0 when every figure is 0."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    workdir = Path(tempfile.mkdtemp(prefix="choreo-chaos-"))
    try:
        report = play(args, workdir)
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    line = json.dumps(report, separators=(",", ":"), default=str)
    print(line, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
