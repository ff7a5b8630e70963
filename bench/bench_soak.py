"""Soak: the order saga at a steady rate for ten minutes; RSS and latency at start and end.

    python bench/bench_soak.py                               # 600 s at 100 sagas/s, own broker
    python bench/bench_soak.py --seconds 30 --rate 50 --window 10 --no-write
    python bench/bench_soak.py --seconds 300 --memprofile /tmp/soakmem   # where memory goes

The four choreo services of the peers benchmark, each its own process
(:mod:`bench.saga_service`) with choreo's default settings and a SQLite store each
(``--store memory`` for the in-memory inbox, pruned every 30 s of entries older than
60 s), on a real single-node broker with 6 partitions. Start events are produced at a
fixed rate (open loop) for ``--seconds``; every ``--window`` seconds a sampler records
each service's and the broker's RSS (``/proc/<pid>/status``) and CPU. After the run,
sagas are grouped by the window they started in, and each window gets its p50/p99/max
latency (terminal event consumed - start event produced).

Verdict: **no leak** when no service's RSS grew by more than ``--leak-mb`` between the
end of the first window and the end of the last one; **no drift** when the last
window's p99 is at most ``--drift`` times the first window's. Every saga must also end
once with the terminal event its id decides. The results also give each service's RSS
slope over the second half of the run (MB/min) and the machine's load average at every
sample (the machine is shared).

``--memprofile DIR`` runs each service under :class:`bench.memprobe.MemProbe`
(tracemalloc, 25 frames; a baseline snapshot after ``--memprofile-baseline`` seconds of
the steady phase and one at the end; a sample of RSS, traced and untraced memory, object
counts and the worker's container lengths every 30 s) and writes, per service, the top
tracemalloc differences by traceback to ``DIR/<service>-top.txt``. tracemalloc slows the
services down: a profiled run's latency and CPU are not the soak's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.memprobe import compare
from bench.peers import choreography as ch
from bench.proc_cpu import process_cpu_seconds
from bench.sagaload import (
    SERVICES,
    BrokerOption,
    Collector,
    Injector,
    Services,
    check_outcomes,
    create_topics,
    delete_topics,
    machine,
    new_layout,
    percentile,
    rss_mb,
)

RESULTS: Final = Path(__file__).resolve().parent / "results"


class Sampler(threading.Thread):
    """Records RSS and CPU of the services and the broker every ``period`` seconds."""

    def __init__(self, pids: dict[str, int], period: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.pids, self.period = pids, period
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.begin = time.monotonic()

    def sample(self) -> None:
        """Take one sample now."""
        self.samples.append({
            "t_s": round(time.monotonic() - self.begin, 1),
            "load_1m": round(os.getloadavg()[0], 2),
            "rss_mb": {who: round(rss_mb(pid), 1) for who, pid in self.pids.items()},
            "cpu_s": {who: round(process_cpu_seconds(pid), 2) for who, pid in self.pids.items()},
        })

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stopping.wait(self.period):
            self.sample()


def windows(starts: dict[str, float], ends: dict[str, float], begin: float,
            width: float) -> list[dict[str, Any]]:
    """Return p50/p99/max latency of the sagas started in each window of ``width`` s."""
    buckets: dict[int, list[float]] = {}
    for order_id, start in starts.items():
        if order_id in ends:
            buckets.setdefault(int((start - begin) // width), []).append(
                (ends[order_id] - start) * 1000)
    return [
        {"window": i, "from_s": i * width, "sagas": len(v),
         "p50_ms": round(percentile(v, 50), 2), "p99_ms": round(percentile(v, 99), 2),
         "max_ms": round(max(v), 2)}
        for i, v in sorted(buckets.items())
    ]


def memprofile_summary(out_dir: Path) -> dict[str, Any]:
    """Compare each service's snapshots; return its memory figures at start, baseline, end.

    Per service: RSS, tracemalloc's traced total and the untraced rest (RSS - traced -
    tracemalloc's own overhead) at each of the three, and the containers reachable from
    the worker whose length grew between the baseline and the end.
    """
    summary: dict[str, Any] = {}
    for service in SERVICES:
        path = out_dir / f"{service}-samples.jsonl"
        if not path.exists():
            continue
        compare(out_dir, service)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        marks = {r["tag"]: r for r in rows if r["tag"]}
        base, end = marks.get("baseline", rows[0]), rows[-1]
        grew = {k: [base["containers"].get(k, 0), n] for k, n in end["containers"].items()
                if n > base["containers"].get(k, 0)}
        summary[service] = {
            tag: {"t_s": r["t_s"], "rss_mb": round(r["rss_kb"]["VmRSS"] / 1024, 1),
                  "traced_mb": round(r["traced_kb"] / 1024, 1),
                  "untraced_mb": round(r["untraced_kb"] / 1024, 1)}
            for tag, r in marks.items()
        }
        summary[service]["containers_grown_baseline_to_end"] = grew
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the soak and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--leak-mb", type=float, default=10.0)
    parser.add_argument("--drift", type=float, default=1.5)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--broker-pid", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--memprofile", type=Path, default=None,
                        help="profile the services' memory into this directory")
    parser.add_argument("--memprofile-baseline", type=float, default=120.0,
                        help="seconds into the steady phase of the baseline snapshot")
    parser.add_argument("--memprofile-frames", type=int, default=25,
                        help="frames tracemalloc keeps per allocation in the services")
    args = parser.parse_args(argv)
    broker = BrokerOption(args.bootstrap, args.broker_pid)
    bootstrap = broker.bootstrap
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    layout = new_layout("event-type")
    topics = layout.topics()
    services = Services()
    tag = uuid.uuid4().hex[:6]
    starts: dict[str, float] = {}
    try:
        create_topics(bootstrap, topics, args.partitions)
        collector = Collector(bootstrap, {layout.topic(t) for t in ch.TERMINAL})
        collector.start()
        with tempfile.TemporaryDirectory() as tmp:
            for service in SERVICES:
                store = f"sqlite:{tmp}/{service}.db" if args.store == "sqlite" else "memory"
                worker = ({} if args.store == "sqlite"
                          else {"inbox_retention": 60.0, "prune_interval": 30.0})
                profile = [] if args.memprofile is None else [
                    "--memprofile", str(args.memprofile),
                    # the services start about 10 s before the steady phase
                    "--memprofile-baseline", str(args.memprofile_baseline + 10),
                    "--memprofile-frames", str(args.memprofile_frames)]
                services.start(service, [
                    "--bootstrap", bootstrap, "--service", service, "--prefix", layout.prefix,
                    "--partitions", str(args.partitions), "--store", store,
                    "--worker", json.dumps(worker), *profile])
            injector = Injector(bootstrap, layout.topic(ch.ORDER_CREATED))
            warm = [f"w{tag}-{i}" for i in range(40)]
            for order_id, payload, headers in injector.prepare(warm):
                injector.send(order_id, payload, headers)
            injector.flush()
            if not collector.wait_for(warm, 120):
                services.check_alive()
                raise RuntimeError("warm-up did not finish")
            ids = [f"s{tag}-{i}" for i in range(int(args.seconds * args.rate))]
            prepared = injector.prepare(ids)
            sampler = Sampler({**services.pids(), "broker": broker.pid}, args.window)
            sampler.sample()
            sampler.start()
            begin = time.monotonic()
            injector.paced(prepared, args.rate, starts, services.check_alive)
            ended = collector.wait_for(ids, 120)
            wall = time.monotonic() - begin
            sampler.stopping.set()
            sampler.join()
            sampler.sample()
            services.stop(timeout=30.0 if args.memprofile is None else 180.0)
        collector.stop()
    finally:
        services.stop()
        delete_topics(bootstrap, topics)
        broker.stop()
    lat = windows(starts, collector.ends, begin, args.window)
    samples = sampler.samples
    first, last = samples[1] if len(samples) > 2 else samples[0], samples[-2]
    growth = {s: round(last["rss_mb"][s] - first["rss_mb"][s], 1) for s in SERVICES}
    half = [x for x in samples[:-1] if x["t_s"] >= last["t_s"] / 2]  # the second half
    slope = {s: round((half[-1]["rss_mb"][s] - half[0]["rss_mb"][s]) * 60
                      / max(half[-1]["t_s"] - half[0]["t_s"], 1e-9), 3)
             for s in SERVICES} if len(half) > 1 else {}
    drift = lat[-1]["p99_ms"] / lat[0]["p99_ms"] if lat else float("nan")
    cpu = {who: round((samples[-1]["cpu_s"][who] - samples[0]["cpu_s"][who]) * 1000 / len(ids), 4)
           for who in samples[0]["cpu_s"]}
    wrong = check_outcomes(ids, collector.outcomes)
    result = {
        "benchmark": "soak",
        "started": started,
        "machine": {**machine(), "kafka": broker.kafka_version},
        "shared_machine": True,
        "load_1m_at_end": samples[-1]["load_1m"],
        "seconds": args.seconds, "rate": args.rate, "window_s": args.window,
        "partitions": args.partitions, "store": args.store, "sagas": len(ids),
        "wall_s": round(wall, 1),
        "cpu_ms_per_saga": cpu,
        "rss_growth_mb_first_to_last_window": growth,
        "rss_mb_per_min_second_half": slope,
        "p99_last_over_first": round(drift, 3),
        "no_leak": all(g <= args.leak_mb for g in growth.values()),
        "no_drift": drift <= args.drift,
        "ended": sum(1 for o in ids if o in collector.ends),
        "duplicate_terminals": collector.duplicates,
        "wrong_outcomes": len(wrong),
        "ok": ended and not wrong and collector.duplicates == 0,
        "windows": lat,
        "samples": samples,
    }
    if args.memprofile is not None:
        result["memprofile"] = memprofile_summary(args.memprofile)
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "machine")},
                     indent=1))
    if not args.no_write:
        out = args.out or RESULTS / f"soak-{started.replace('-', '').replace(':', '')}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
