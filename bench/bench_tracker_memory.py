"""Where a tracker instance's memory goes, and an A/B of its peak RSS against another checkout.

On a real broker started for the run, one log (``bench_tracker_scale``'s mix, default
150,000 sagas) is rebuilt by one ``choreo tracker run`` instance per variant, each in a new
group and summary topic, the variants interleaved over ``--rounds`` rounds (the order
reversed every other round). Each instance runs under ``bench/tracker_probe.py``, which
reports, once the group committed every event, its peak and current RSS, glibc's heap
(in use, free inside it, mmapped; arenas), pymalloc's arenas, the trackers' own structures
and the RSS after ``malloc_trim(0)``. A variant is a source tree and environment
variables:

    python bench/bench_tracker_memory.py --ref main              # main against this tree
    python bench/bench_tracker_memory.py --env PYTHONMALLOC=malloc --env MALLOC_ARENA_MAX=2
    python bench/bench_tracker_memory.py --tracemalloc --rounds 1 --no-write  # + Python's view

``--ref REF`` exports that commit (``git archive``) as the baseline; without it the
baseline is this tree as it is. Ratios are taken within a round; the JSON (default
``results/tracker_memory.json``) keeps every run with min/median/max per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import confluent_kafka as ck

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracker_scale import PREFIX, broker, committed_total, produce
from proc_cpu import process_cpu_seconds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "tracker_memory.json"
PROBE = HERE / "tracker_probe.py"


def export(ref: str, into: Path) -> Path:
    """Write the tree of ``ref`` into ``into`` (``git archive``); return it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def rebuild(bootstrap: str, tree: Path, env: dict[str, str], name: str, *, events: int,
            partitions: int, cap_s: float, out_dir: Path, tracemalloc: bool) -> dict[str, Any]:
    """Run one probed instance over the log until its group committed ``events``."""
    group, topic = f"mem-{name}", f"_mem-summaries-{name}"
    report = out_dir / f"{name}.json"
    log = out_dir / f"{name}.log"
    args = [sys.executable, str(PROBE), str(report), *(["--tracemalloc"] if tracemalloc else []),
            "--", "--bootstrap", bootstrap, "--group", group, "--summary-topic", topic,
            "--topics", f"^{PREFIX}\\.", "--partitions", str(partitions), "--instance-id", "i0",
            "--deadline", "3600"]
    with log.open("wb") as err:
        proc = subprocess.Popen(args, cwd=tree, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "PYTHONPATH": str(tree), **env})
    started = time.perf_counter()
    done = 0
    try:
        while time.perf_counter() - started < cap_s and done < events:
            time.sleep(1.0)
            if proc.poll() is not None:
                raise RuntimeError(f"the instance exited ({proc.returncode}): see {log}")
            done = committed_total(bootstrap, group, partitions)
        seconds = time.perf_counter() - started
        cpu = process_cpu_seconds(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    row: dict[str, Any] = {"name": name, "seconds": round(seconds, 1), "committed_events": done,
                           "events_per_s": round(done / seconds), "cpu_s": round(cpu, 1)}
    if done < events:
        row["status"] = f"capped: {done} of {events} events in {cap_s:.0f} s"
    if report.exists():
        row["probe"] = json.loads(report.read_text())
    else:
        row["error"] = f"no report from the probe (exit code {proc.returncode}): see {log}"
    return row


def _peak(row: dict[str, Any]) -> float:
    """Return a run's peak RSS."""
    return float(row["probe"]["peak_rss_mib"])


def _rate(row: dict[str, Any]) -> float:
    """Return a run's events/s."""
    return float(row["events_per_s"])


def spread(values: list[float]) -> dict[str, float]:
    """Return the min, median and max of ``values``."""
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def main(argv: list[str] | None = None) -> int:
    """Run the variants over one log and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=150_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref", help="baseline commit (git archive); default: this tree")
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=VALUE[,NAME=VALUE]: a variant of this tree with these "
                             "environment variables (repeat for more variants)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations (slower: the rates are not figures)")
    parser.add_argument("--cap", type=float, default=300.0, help="cap per rebuild, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tracker-memory-"))
    variants: list[tuple[str, Path, dict[str, str]]] = []
    if args.ref:
        (work / "ref").mkdir()
        variants.append((f"ref-{args.ref}", export(args.ref, work / "ref"), {}))
    variants.append(("tree", ROOT, {}))
    for item in args.env:  # each its own variant; NAME=VALUE,NAME=VALUE for several
        env = dict(pair.split("=", 1) for pair in item.split(","))
        variants.append((f"tree+{item}", ROOT, env))
    result: dict[str, Any] = {
        "benchmark": "tracker instance memory: peak RSS and where it goes, A/B",
        "baseline": variants[0][0], "sagas": args.sagas, "rounds": args.rounds,
        "tracemalloc": args.tracemalloc,
        "notes": ("One broker, one log; one `choreo tracker run` instance per variant and "
                  "round (bench/tracker_probe.py), each in a new group, variants interleaved "
                  "(order reversed every other round). Each run's `probe` is taken once the "
                  "group committed every event: RSS, pymalloc arenas, glibc heap (mallinfo2), "
                  "the trackers' structures, RSS after malloc_trim(0). Ratios are within a "
                  "round."),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "librdkafka": ck.libversion()[0]},
        "runs": [],
    }
    with broker() as kafka:
        log = produce(kafka.bootstrap, args.sagas, args.partitions, 600.0)
        result["log"] = log
        print(json.dumps(log), flush=True)
        for number in range(args.rounds):
            order = variants if number % 2 == 0 else variants[::-1]
            for label, tree, env in order:
                name = f"r{number}-{len(result['runs'])}"
                row = rebuild(kafka.bootstrap, tree, env, name, events=log["events"],
                              partitions=args.partitions, cap_s=args.cap, out_dir=work,
                              tracemalloc=args.tracemalloc)
                row.update(variant=label, round=number)
                result["runs"].append(row)
                probe = row.get("probe", {})
                print(json.dumps({k: row[k] for k in ("variant", "round", "events_per_s")}
                                 | {"peak": probe.get("peak_rss_mib"),
                                    "trim": probe.get("rss_after_trim_mib")}), flush=True)
    base = variants[0][0]
    summary: dict[str, Any] = {}
    for label, _, _ in variants:
        rows = [r for r in result["runs"] if r["variant"] == label and "probe" in r]
        if not rows:
            continue
        entry: dict[str, Any] = {
            "peak_rss_mib": spread([r["probe"]["peak_rss_mib"] for r in rows]),
            "events_per_s": spread([r["events_per_s"] for r in rows]),
        }
        if label != base:
            for key, figure in (("peak_rss_ratio", _peak), ("events_per_s_ratio", _rate)):
                ratios = []
                for row in rows:
                    twin = [b for b in result["runs"] if b["variant"] == base
                            and b["round"] == row["round"] and "probe" in b]
                    if twin:
                        ratios.append(figure(row) / figure(twin[0]))
                if ratios:
                    entry[key] = spread(ratios)
        summary[label] = entry
    result["summary"] = summary
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary, indent=1))
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
