"""Benchmark choreo against its peers on one order-fulfilment saga, side by side in one run.

    python bench/run_peers.py [--sagas 1000,10000] [--partitions 1,6]
                              [--only raw,choreo-confluent,...] [--bootstrap HOST:PORT]
                              [--budget 300] [--profile choreo-confluent] [--no-write]

Starts its own single-node Kafka broker with ``scripts/kafka_broker.py`` unless
``--bootstrap`` is given. For every (sagas, partitions) cell it runs each implementation
in turn, each in a fresh subprocess (``python -m bench.peers.harness``), after deleting
and recreating the saga's topics (named by the events' Avro full names) with that many
partitions. DBOS needs no Kafka and runs once per saga count. A run whose timed phase
exceeds ``--budget`` seconds is reported as timed out (the subprocess is killed if it
does not return within the budget plus a grace period).

Results go to ``bench/results/peers-<UTC time>.json`` (with the machine's description)
and, as a table of ratios against the raw ceiling measured in the same run, into the
"Peers" section of ``bench/README.md``. ``--profile IMPL`` adds a py-spy profile of
IMPL's run (every thread sampled) and a summary of where its time went.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers.harness import IMPLEMENTATIONS, KAFKA_FREE, recreate_topics, saga_topics  # noqa: E402
from bench.peers.profile import summarize  # noqa: E402

RESULTS = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
BEGIN = "<!-- peers:results:begin -->"
END = "<!-- peers:results:end -->"
GRACE_S = 240.0
DEFAULT_IMPLS = tuple(IMPLEMENTATIONS)
PACKAGES = (
    "choreo",
    "confluent-kafka",
    "kafka-python",
    "fastavro",
    "faststream",
    "aiokafka",
    "dbos",
    "sqlalchemy",
    "py-spy",
    "crc32c",
)
TARGET_SUBJECTS = ("choreo-confluent", "choreo-confluent-short-poll")


# --- the machine ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Return the CPU model, cores, memory, Python and client library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        versions["librdkafka"] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


# --- the broker ---------------------------------------------------------------------------


@contextmanager
def broker(bootstrap: str | None) -> Iterator[tuple[str, str]]:
    """Yield (bootstrap, description): the given broker, or a fresh one from the script."""
    if bootstrap:
        yield bootstrap, f"existing broker at {bootstrap}"
        return
    path = ROOT / "scripts" / "kafka_broker.py"
    spec = importlib.util.spec_from_file_location("kafka_broker", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_broker"] = module
    spec.loader.exec_module(module)
    print("starting a Kafka broker (scripts/kafka_broker.py) ...", flush=True)
    with module.KafkaBroker(port=0) as started:
        yield (
            started.bootstrap,
            (
                f"Apache Kafka {module.KAFKA_VERSION}, single node (KRaft), started by "
                "scripts/kafka_broker.py for this run, on the same machine"
            ),
        )


# --- one run ------------------------------------------------------------------------------


def run_one(
    impl: str,
    *,
    sagas: int,
    partitions: int,
    bootstrap: str,
    budget: float,
    warmup: int,
    profile: str | None = None,
    profile_idle: bool = False,
) -> dict[str, Any]:
    """Recreate the topics, run ``impl`` in a subprocess and return its result dict."""
    if impl not in KAFKA_FREE:
        recreate_topics(bootstrap, saga_topics(), partitions)
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        out = Path(scratch) / "result.json"
        command = [
            sys.executable,
            "-m",
            "bench.peers.harness",
            "--impl",
            impl,
            "--sagas",
            str(sagas),
            "--partitions",
            str(partitions),
            "--bootstrap",
            bootstrap,
            "--budget",
            str(budget),
            "--warmup",
            str(warmup),
            "--out",
            str(out),
        ]
        if profile:
            command += ["--profile", profile, *(["--profile-idle"] if profile_idle else [])]
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _, stderr = process.communicate(timeout=budget + GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            return _failed(impl, sagas, partitions, "killed (no result in budget + grace)", stderr)
        if not out.exists():
            return _failed(impl, sagas, partitions, f"crashed (exit {process.returncode})", stderr)
        result: dict[str, Any] = json.loads(out.read_text())
        result["process_wall_s"] = round(time.monotonic() - started, 1)
        if process.returncode != 0 and stderr.strip():
            result["stderr_tail"] = stderr.strip().splitlines()[-5:]
        return result


def _failed(impl: str, sagas: int, partitions: int, status: str, stderr: str) -> dict[str, Any]:
    return {
        "impl": impl,
        "sagas": sagas,
        "partitions": partitions,
        "status": status,
        "stderr_tail": stderr.strip().splitlines()[-15:],
    }


def _line(result: dict[str, Any]) -> str:
    """Return one progress line for a result."""
    if "sagas_per_s" not in result:
        return (
            f"{result['impl']:<22} {result['sagas']:>6} x{result['partitions']}  {result['status']}"
        )
    lat = result["latency_ms"]
    return (
        f"{result['impl']:<22} {result['sagas']:>6} x{result['partitions']}  "
        f"{result['sagas_per_s']:>8.1f} sagas/s  "
        f"p50 {lat['p50']:>8.1f}  p99 {lat['p99']:>8.1f} ms  "
        f"cpu {result['cpu_ms_per_saga']:.3f} ms/saga  rss {result['peak_rss_mb']:.0f} MB  "
        f"{result['status']} state {result.get('state_check', '?')[:40]}"
    )


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return one result for repeated runs: the median of each measurement, every run kept."""
    if len(runs) == 1:
        return {**runs[0], "repeats": 1}
    measured = [r for r in runs if "sagas_per_s" in r]
    if not measured:
        return {**runs[0], "repeats": len(runs)}
    measured.sort(key=lambda r: r["sagas_per_s"])
    combined = dict(measured[len(measured) // 2])
    for key in ("sagas_per_s", "events_per_s", "cpu_ms_per_saga", "peak_rss_mb", "duration_s"):
        combined[key] = statistics.median(r[key] for r in measured)
    combined["latency_ms"] = {
        key: statistics.median(r["latency_ms"][key] for r in measured)
        for key in ("p50", "p95", "p99", "max")
    }
    bad = [r for r in runs if r.get("status") != "ok" or r.get("state_check", "ok") != "ok"]
    if bad:
        combined["status"] = bad[0].get("status", "?")
        combined["state_check"] = bad[0].get("state_check", "?")
    combined["repeats"] = len(runs)
    combined["runs"] = [
        {
            k: r.get(k)
            for k in ("status", "sagas_per_s", "latency_ms", "cpu_ms_per_saga", "peak_rss_mb")
        }
        for r in runs
    ]
    return combined


# --- ratios and the table ---------------------------------------------------------------------


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Add ``vs_raw`` ratios to each result, against raw of the same cell (DBOS: same sagas)."""
    raws = {(r["sagas"], r["partitions"]): r for r in results if r["impl"] == "raw"}
    for result in results:
        raw = raws.get((result["sagas"], result["partitions"]))
        if raw is None and result["impl"] in KAFKA_FREE:
            raw = next((r for (s, _), r in sorted(raws.items()) if s == result["sagas"]), None)
        if raw is None or "sagas_per_s" not in raw or "sagas_per_s" not in result:
            continue
        result["vs_raw"] = {
            "sagas_per_s": _ratio(result["sagas_per_s"], raw["sagas_per_s"]),
            "p50": _ratio(result["latency_ms"]["p50"], raw["latency_ms"]["p50"]),
            "p99": _ratio(result["latency_ms"]["p99"], raw["latency_ms"]["p99"]),
            "cpu_ms_per_saga": _ratio(result["cpu_ms_per_saga"], raw["cpu_ms_per_saga"]),
            "raw_partitions": raw["partitions"],
        }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def targets(results: list[dict[str, Any]], subject: str = "choreo-confluent") -> list[str]:
    """Return one line per cell saying whether ``subject`` meets the issue's targets."""
    lines = []
    cells = sorted({(r["sagas"], r["partitions"]) for r in results if r["impl"] == subject})
    for sagas, partitions in cells:
        by = {
            r["impl"]: r for r in results if r["sagas"] == sagas and r["partitions"] == partitions
        }
        dbos = next((r for r in results if r["impl"] == "dbos" and r["sagas"] == sagas), None)
        me = by[subject]
        if "vs_raw" not in me:
            lines.append(f"- {sagas} sagas x{partitions}: {subject} {me['status']}; no comparison")
            continue
        checks = [
            _check(">= 0.7x raw sagas/s", me["vs_raw"]["sagas_per_s"], 0.7, higher=True),
            _check("p99 <= 1.5x raw", me["vs_raw"]["p99"], 1.5, higher=False),
        ]
        fast = by.get("faststream")
        if fast and "sagas_per_s" in fast:
            checks.append(
                _check(
                    ">= 2x FastStream sagas/s",
                    _ratio(me["sagas_per_s"], fast["sagas_per_s"]),
                    2.0,
                    higher=True,
                )
            )
        if dbos and "sagas_per_s" in dbos:
            checks.append(
                _check(
                    "ahead of DBOS-SQLite",
                    _ratio(me["sagas_per_s"], dbos["sagas_per_s"]),
                    1.0,
                    higher=True,
                )
            )
        lines.append(f"- {sagas:,} sagas x {partitions} partition(s): " + "; ".join(checks))
    return lines


def _check(label: str, value: float | None, bound: float, *, higher: bool) -> str:
    if value is None:
        return f"{label}: n/a"
    ok = value >= bound if higher else value <= bound
    return f"{label}: {value:.2f}x {'✅' if ok else '❌'}"


def table(results: list[dict[str, Any]]) -> str:
    """Return the Markdown table of a run: absolute numbers and ratios against raw."""
    head = (
        "| implementation | sagas | partitions | sagas/s | x raw | p50 ms | p95 ms | p99 ms "
        "| p99 x raw | CPU ms/saga | CPU x raw | peak RSS MB | status |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in results:
        if "sagas_per_s" not in r:
            rows.append(
                f"| {r['impl']} | {r['sagas']:,} | {r['partitions']} | - | - | - | - | - | - "
                f"| - | - | - | {r['status']} |"
            )
            continue
        lat, ratio = r["latency_ms"], r.get("vs_raw", {})
        partitions = "n/a" if r["impl"] in KAFKA_FREE else str(r["partitions"])
        status = r["status"] if r["status"] != "ok" else "ok"
        if r["status"] == "timed out":
            status = f"timed out ({r['ended']:,} ended)"
        if r.get("state_check", "ok") != "ok":
            status += ", state mismatch"
        rows.append(
            f"| {r['impl']} | {r['sagas']:,} | {partitions} | {r['sagas_per_s']:,.0f} "
            f"| {_x(ratio.get('sagas_per_s'))} | {lat['p50']:,.0f} | {lat['p95']:,.0f} "
            f"| {lat['p99']:,.0f} | {_x(ratio.get('p99'))} | {r['cpu_ms_per_saga']:.3f} "
            f"| {_x(ratio.get('cpu_ms_per_saga'))} | {r['peak_rss_mb']:.0f} | {status} |"
        )
    return head + "\n".join(rows) + "\n"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_readme(report: dict[str, Any], json_name: str) -> None:
    """Replace the generated part of the Peers section of bench/README.md."""
    m = report["machine"]
    generated = (
        f"{BEGIN}\n"
        f"Run of {report['started_at']} ({json_name}): {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, Python {m['python']}, confluent-kafka "
        f"{m['packages'].get('confluent-kafka')} (librdkafka {m['packages'].get('librdkafka')}), "
        f"kafka-python {m['packages'].get('kafka-python')}, FastStream "
        f"{m['packages'].get('faststream')} (aiokafka {m['packages'].get('aiokafka')}), DBOS "
        f"{m['packages'].get('dbos')}, fastavro {m['packages'].get('fastavro')}; "
        f"{report['broker']}.\n\n"
        + table(report["results"])
        + "".join(
            f"\nTargets for {subject}, per cell:\n\n"
            + "\n".join(targets(report["results"], subject))
            + "\n"
            for subject in TARGET_SUBJECTS
            if any(r["impl"] == subject for r in report["results"])
        )
        + f"\n{END}"
    )
    text = README.read_text() if README.exists() else ""
    if BEGIN in text and END in text:
        text = re.sub(
            re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: generated, text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    README.write_text(text)


# --- the command --------------------------------------------------------------------------------


def profile(impl: str, args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """Run ``impl`` twice under py-spy (CPU, then wall with idle threads); return summaries."""
    profiles: dict[str, Any] = {}
    for mode, idle in (("cpu", False), ("wall", True)):
        with tempfile.TemporaryDirectory(prefix="peers-profile-") as scratch:
            stacks = Path(scratch) / "stacks.txt"
            result = run_one(
                impl,
                sagas=max(args.sagas),
                partitions=args.partitions[0],
                bootstrap=bootstrap,
                budget=args.budget,
                warmup=args.warmup,
                profile=str(stacks),
                profile_idle=idle,
            )
            print(f"profiled ({mode}): " + _line(result), flush=True)
            if stacks.exists():
                summary = summarize(stacks)
                profiles[mode] = {"run": result, **summary}
                for name, pct in summary["top_self"][:12]:
                    print(f"  {pct:5.1f}%  {name}", flush=True)
    return profiles


def render(path: Path) -> None:
    """Recompute ratios and targets of a recorded run; rewrite its JSON and the README table."""
    report = json.loads(path.read_text())
    add_ratios(report["results"])
    report.pop("targets_choreo_confluent", None)
    report["targets"] = {s: targets(report["results"], s) for s in TARGET_SUBJECTS}
    path.write_text(json.dumps(report, indent=2) + "\n")
    write_readme(report, f"bench/results/{path.name}")
    print(table(report["results"]))


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the matrix, print a line per run, write the JSON and the README table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sagas", type=_ints, default=[1000, 10000])
    parser.add_argument("--partitions", type=_ints, default=[1, 6])
    parser.add_argument(
        "--only",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        default=list(DEFAULT_IMPLS),
        help=f"implementations, comma-separated, of: {', '.join(IMPLEMENTATIONS)}",
    )
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of a new one")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per Kafka implementation and cell, interleaved; medians are reported",
    )
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per timed run")
    parser.add_argument("--warmup", type=int, default=40, help="untimed sagas before each run")
    parser.add_argument(
        "--profile",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        default=[],
        help="implementations to profile with py-spy: two extra runs each (CPU, wall), "
        "largest saga count, first partition count",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only rewrite the README table from a recorded bench/results/peers-*.json",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        render(args.render)
        return 0
    unknown = [i for i in (*args.only, *args.profile) if i not in IMPLEMENTATIONS]
    if unknown:
        parser.error(f"unknown implementation(s): {', '.join(unknown)}")
    impls = [i for i in IMPLEMENTATIONS if i in args.only]
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    with broker(args.bootstrap) as (bootstrap, description):
        print(f"broker: {description}", flush=True)
        for sagas in args.sagas:
            for index, partitions in enumerate(args.partitions):
                runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
                for repeat in range(args.repeat):
                    for impl in impls:
                        if impl in KAFKA_FREE and (index > 0 or repeat > 0):
                            continue  # no partitions, and long: one run per saga count
                        result = run_one(
                            impl,
                            sagas=sagas,
                            partitions=partitions,
                            bootstrap=bootstrap,
                            budget=args.budget,
                            warmup=args.warmup,
                        )
                        runs[impl].append(result)
                        print(_line(result), flush=True)
                results.extend(combine(runs[impl]) for impl in impls if runs[impl])
        for impl in args.profile:
            profiles[impl] = profile(impl, args, bootstrap)
    add_ratios(results)
    report = {
        "started_at": started_at,
        "machine": machine(),
        "broker": description,
        "method": {
            "budget_s": args.budget,
            "warmup_sagas": args.warmup,
            "latency": "OrderCreated produce -> terminal event consumed by the harness's collector "
            "(DBOS: workflow's last step returned)",
            "cpu": "process CPU time of the implementation's subprocess over the timed phase "
            "(all threads incl. Kafka clients' native threads, injector and collector); "
            "the broker's CPU is not included",
            "memory": "peak RSS of the subprocess (ru_maxrss)",
            "load": "all start events injected up front as fast as possible (throughput mode)",
        },
        "results": results,
        "targets": {subject: targets(results, subject) for subject in TARGET_SUBJECTS},
        "profiles": profiles,
    }
    print("\n" + table(results))
    for subject in TARGET_SUBJECTS:
        print(f"{subject}:\n" + "\n".join(targets(results, subject)))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = "peers-" + started_at.replace(":", "").replace("-", "") + ".json"
        (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
        write_readme(report, f"bench/results/{name}")
        print(f"\nwrote bench/results/{name} and the Peers table in bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
