"""Paired A/B of one bench_stores.py cell: this tree's PostgreSQL store against a git ref's.

``bench_stores.py`` runs its cells one after the other in each round, so on a shared
machine a slow phase can fall on one side only. Here the two stores run the same cell
(``bench_stores.run_cell``) back to back in every round, in alternating order, and each
round gives one ratio: many short rounds of adjacent pairs resolve smaller differences
than a few long rounds. Per cell: wall µs per timed event, this process's CPU µs per event
(the whole cell: worker start, warm-up batch and the final check included) and the CPU µs
per event of the server backend serving the store's connection (``/proc``: a local server).

    python bench/bench_stores_paired.py --handler update --events 4000 --rounds 16
    python bench/bench_stores_paired.py --handler none --ref main --write
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runtime as rt
import bench_stores as bs

from choreo.store import Store
from choreo.store.postgres import PostgresStore
from choreo.transports.memory import MemoryBus


def _backend_cpu(pid: int) -> float:
    """Return the CPU seconds the server process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_pair_side(open_store: Callable[[], Store], events: int, update: bool) -> list[float]:
    """Return [wall, client CPU, backend CPU] µs per event of one cell on a fresh store."""
    bus = MemoryBus()
    rt.fill(bus, events)
    store = open_store()
    try:
        store.begin()
        store.seen("bench-pid", ["x"])  # opens the transaction's connection
        pid = store.connection.info.backend_pid
        store.rollback()
        backend, client = _backend_cpu(pid), time.process_time()
        wall, _ = bs.run_cell(bus, store, with_update=update)
        client = time.process_time() - client
        backend = _backend_cpu(pid) - backend
    finally:
        store.close()
    return [wall / (events - 500) * 1e6, client / events * 1e6, backend / events * 1e6]


def main() -> None:
    """Run the pairs and print (and with ``--write`` record) the per-round ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--handler", choices=["none", "update"], default="update")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--ref", default="main", help="the git ref of the other store")
    parser.add_argument("--write", action="store_true", help="record bench/results/*.json")
    args = parser.parse_args()
    stops: list[Callable[[], None]] = []
    try:
        url = bs._postgres_url(stops)
        before = bs.baseline_store(args.ref)
        sides: dict[str, Callable[[], Store]] = {
            "this": lambda: PostgresStore(url, schema=f"b_{uuid.uuid4().hex[:10]}"),
            args.ref: lambda: before(url, schema=f"b_{uuid.uuid4().hex[:10]}"),
        }
        runs: dict[str, list[list[float]]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            names = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in names:
                runs[name].append(run_pair_side(sides[name], args.events, args.handler == "update"))
    finally:
        for stop in reversed(stops):
            stop()
    clocks = ("wall_us_per_event", "client_cpu_us_per_event", "backend_cpu_us_per_event")
    report = {
        "benchmark": "stores_paired",
        "cell": f"postgresql / {args.handler}",
        "events": args.events,
        "rounds": args.rounds,
        "ref": args.ref,
        "method": "adjacent pairs, order alternating per round; ratio this / ref per round",
        "this": {c: bs.spread([r[i] for r in runs["this"]]) for i, c in enumerate(clocks)},
        args.ref: {c: bs.spread([r[i] for r in runs[args.ref]]) for i, c in enumerate(clocks)},
        "ratio_this_vs_ref": {
            c: bs.spread([a[i] / b[i] for a, b in zip(runs["this"], runs[args.ref], strict=True)])
            for i, c in enumerate(clocks)
        },
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(report, indent=2))
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%MZ")
        path = bs.RESULTS.parent / f"stores-paired-{stamp}-{args.handler}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
