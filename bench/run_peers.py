"""Benchmark choreo against its peers on one order-fulfilment saga, side by side in one run.

    python bench/run_peers.py                       # the whole matrix (see --help for subsets)
    python bench/run_peers.py --sagas 1000 --partitions 1,6 --repeat 3 \\
        --scale-replicas 2,3 --scale-only ceiling,choreo-confluent
    python bench/run_peers.py --only ceiling,choreo-confluent --no-scale --no-write

Starts its own single-node Kafka broker (``scripts/kafka_broker.py``) unless
``--bootstrap`` is given, and, when a PostgreSQL peer runs, its own PostgreSQL server
(``scripts/postgres_server.py``) unless ``CHOREO_POSTGRES_URL`` is set; both are metered
from /proc when this command started them (or ``--broker-pid``/``--postgres-pid``).
For every cell (sagas, partitions) it runs each implementation ``--repeat`` times,
interleaved (repeat 1 of every implementation, then repeat 2, ...), each run a fresh
``python -m bench.peers.runner`` subprocess that recreates the topics and starts every
service in a process of its own. DBOS needs no Kafka and runs in the first partition cell
only. Then the horizontal-scale rows: ``--scale-only`` implementations with 2, 3, ...
replicas per service on ``--scale-partitions`` partitions (1 replica is the main cell).

``--baseline-tree DIR`` adds, for A/B runs of a change, the implementations named in
``--baseline-only`` (default ``choreo-confluent``) as they are in another checkout ``DIR``
(e.g. ``git worktree add /tmp/main main``): rows ``<name>@base``, whose runs start the
harness and every service process from ``DIR``'s code, interleaved with this checkout's.

Results go to ``bench/results/peers-<UTC time>.json`` (machine, versions, every run) and,
as tables with spreads and ratios against ``ceiling`` and ``raw`` of the same run, into the
"Peers" section of ``bench/README.md`` (``--render FILE`` redoes that from a JSON).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers.harness import IMPLEMENTATIONS, KAFKA_FREE, NEEDS_POSTGRES  # noqa: E402
from bench.peers.report import add_ratios, combine, scale_lines, table, targets, write_readme  # noqa: E402

RESULTS = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
GRACE_S = 240.0
BASE_SUFFIX = "@base"
"""Marks an implementation run from ``--baseline-tree`` (another checkout's code)."""
DIAGNOSTIC_IMPLS = frozenset({"dbos-sqlite", "ceiling-interleaved"})
DEFAULT_IMPLS = tuple(i for i in IMPLEMENTATIONS if i not in DIAGNOSTIC_IMPLS)
DEFAULT_SCALE = ("ceiling", "choreo-postgres")
"""choreo on a memory store refuses a second replica (its state cannot be shared): it
scales on the PostgreSQL store."""
PACKAGES = (
    "choreo",
    "confluent-kafka",
    "kafka-python",
    "fastavro",
    "faststream",
    "aiokafka",
    "dbos",
    "sqlalchemy",
    "psycopg",
    "psycopg-pool",
    "crc32c",
)


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


# --- the broker and the database ------------------------------------------------------------


def _script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module."""
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def broker(bootstrap: str | None, pid: int | None) -> Iterator[tuple[str, str, int | None]]:
    """Yield (bootstrap, description, JVM pid): the given broker, or a fresh one."""
    if bootstrap:
        yield bootstrap, f"existing broker at {bootstrap}", pid
        return
    module = _script("kafka_broker")
    print("starting a Kafka broker (scripts/kafka_broker.py) ...", flush=True)
    with module.KafkaBroker(port=0) as started:
        yield (
            started.bootstrap,
            (
                f"Apache Kafka {module.KAFKA_VERSION}, single node (KRaft), started by "
                "scripts/kafka_broker.py for this run, on the same machine"
            ),
            started.pid,
        )


@contextmanager
def postgres(needed: bool, pid: int | None) -> Iterator[tuple[str | None, str | None, int | None]]:
    """Yield (URL, description, postmaster pid): CHOREO_POSTGRES_URL, a fresh server, or none."""
    if not needed:
        yield None, None, None
        return
    url = os.environ.get("CHOREO_POSTGRES_URL")
    if url:
        yield url, f"PostgreSQL {_pg_version(url)} from CHOREO_POSTGRES_URL", pid
        return
    module = _script("postgres_server")
    print("starting PostgreSQL (scripts/postgres_server.py) ...", flush=True)
    with module.PostgresServer() as server:
        described = (
            f"PostgreSQL {_pg_version(server.url)} (defaults, fsync on), started by "
            "scripts/postgres_server.py for this run, on the same machine"
        )
        yield server.url, described, server.pid


def _pg_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# --- one run ------------------------------------------------------------------------------


def run_one(impl: str, env: dict[str, Any], **cell: Any) -> dict[str, Any]:
    """Run ``impl`` once in a harness subprocess (topics recreated) and return its result."""
    sagas, partitions, replicas = cell["sagas"], cell["partitions"], cell.get("replicas", 1)
    tree, name, run_env = ROOT, impl, None
    if impl.endswith(BASE_SUFFIX):  # the same implementation, another checkout's code
        tree, name = Path(env["baseline_tree"]), impl.removesuffix(BASE_SUFFIX)
        run_env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        out = Path(scratch) / "result.json"
        command = [
            sys.executable, "-m", "bench.peers.runner", "--impl", name,
            "--sagas", str(sagas), "--partitions", str(partitions), "--replicas", str(replicas),
            "--bootstrap", env["bootstrap"], "--budget", str(env["budget"]),
            "--warmup", str(env["warmup"]), "--recreate-topics", "--out", str(out),
        ]  # fmt: skip
        if env.get("broker_pid"):
            command += ["--broker-pid", str(env["broker_pid"])]
        if env.get("client_stats"):
            command.append("--client-stats")
        if impl in NEEDS_POSTGRES:
            command += ["--postgres-url", env["postgres_url"]]
            if env.get("postgres_pid"):
                command += ["--postgres-pid", str(env["postgres_pid"])]
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=tree,
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, stderr = process.communicate(timeout=env["budget"] + GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            return _failed(impl, cell, "killed (no result in budget + grace)", stderr)
        if not out.exists():
            return _failed(impl, cell, f"crashed (exit {process.returncode})", stderr)
        result: dict[str, Any] = json.loads(out.read_text())
        result["impl"] = impl
        result["process_wall_s"] = round(time.monotonic() - started, 1)
        if process.returncode != 0 and stderr.strip():
            result["stderr_tail"] = stderr.strip().splitlines()[-5:]
        return result


def _failed(impl: str, cell: dict[str, Any], status: str, stderr: str) -> dict[str, Any]:
    return {
        "impl": impl,
        "sagas": cell["sagas"],
        "partitions": cell["partitions"],
        "replicas": cell.get("replicas", 1),
        "status": status,
        "stderr_tail": stderr.strip().splitlines()[-15:],
    }


def _line(result: dict[str, Any]) -> str:
    """Return one progress line for a result."""
    head = (
        f"{result['impl']:<20} {result['sagas']:>6} x{result['partitions']} "
        f"r{result.get('replicas', 1)}"
    )
    if "sagas_per_s" not in result:
        return f"{head}  {result['status']} {' | '.join(result.get('stderr_tail', [])[-2:])}"

    def ms(key: str) -> str:
        value = result.get(key)
        return "-" if value is None else f"{value:.3f}"

    line = (
        f"{head}  {result['sagas_per_s']:>8.1f} sagas/s  p99 {result['latency_ms']['p99']:>8.1f} ms"
        f"  cpu ms/saga: services {ms('cpu_ms_per_saga')} (python {ms('python_cpu_ms_per_saga')}"
        f" rdkafka {ms('rdkafka_cpu_ms_per_saga')}) broker {ms('broker_cpu_ms_per_saga')}"
        f" pg {ms('postgres_cpu_ms_per_saga')} harness {ms('harness_cpu_ms_per_saga')}"
        f"  idle {result.get('idle_service_cpu_ms_per_s')} ms/s"
        f"  busy {result.get('machine_busy_cores')}  {result['status']}"
        f" state {str(result.get('state_check', '?'))[:60]}"
    )
    client = result.get("client_per_saga")
    if client:
        line += "\n    per saga: " + ", ".join(f"{k} {v}" for k, v in client.items())
    return line


def _matrix(args: argparse.Namespace, env: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every cell, repeats interleaved; return one combined row per cell."""
    cells: list[tuple[str, dict[str, Any]]] = []
    for sagas in args.sagas:
        for index, partitions in enumerate(args.partitions):
            for impl in args.only:
                if impl in KAFKA_FREE and index > 0:
                    continue  # no partitions: one cell per saga count
                cells.append((impl, {"sagas": sagas, "partitions": partitions, "replicas": 1}))
        if args.scale_replicas:
            for replicas in args.scale_replicas:
                if replicas == 1 and args.scale_partitions in args.partitions:
                    continue  # the main cell of the same partitions is the 1-replica row
                for impl in args.scale_only:
                    cell = {"sagas": sagas, "partitions": args.scale_partitions}
                    cells.append((impl, {**cell, "replicas": replicas}))
    runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(cells))}
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, (_, cell) in enumerate(cells):
        groups.setdefault((cell["sagas"], cell["partitions"], cell["replicas"]), []).append(i)
    for members in groups.values():  # one cell after the other, repeats interleaved in it
        for _ in range(args.repeat):
            for i in members:
                impl, cell = cells[i]
                result = run_one(impl, env, **cell)
                runs[i].append(result)
                print(_line(result), flush=True)
    return [combine(runs[i]) for i in range(len(cells))]


def render(path: Path) -> None:
    """Recompute ratios and targets of a recorded run; rewrite its JSON and the README table."""
    report = json.loads(path.read_text())
    add_ratios(report["results"])
    report["targets"] = targets(report["results"])
    path.write_text(json.dumps(report, indent=2) + "\n")
    write_readme(README, report, f"bench/results/{path.name}")
    print(table(report["results"]))


def _described_tree(tree: Path | None) -> str | None:
    """Return the ``--baseline-tree`` with its commit, for the results JSON."""
    if tree is None:
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "not a git checkout"
    return f"{tree} ({commit})"


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Return the command line's arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sagas", type=_ints, default=[1000])
    parser.add_argument("--partitions", type=_ints, default=[1, 6])
    parser.add_argument(
        "--only",
        type=_names,
        default=list(DEFAULT_IMPLS),
        help=f"implementations, comma-separated, of: {', '.join(IMPLEMENTATIONS)}",
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per cell")
    parser.add_argument("--scale-replicas", type=_ints, default=[1, 2, 3])
    parser.add_argument("--scale-partitions", type=int, default=6)
    parser.add_argument("--scale-only", type=_names, default=list(DEFAULT_SCALE))
    parser.add_argument("--no-scale", action="store_true", help="no horizontal-scale rows")
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of a new one")
    parser.add_argument("--broker-pid", type=int, default=None, help="its JVM, to meter")
    parser.add_argument("--postgres-pid", type=int, default=None, help="CHOREO_POSTGRES_URL's")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per timed run")
    parser.add_argument("--warmup", type=int, default=40, help="untimed sagas before each run")
    parser.add_argument(
        "--client-stats",
        action="store_true",
        help="diagnostic: librdkafka statistics of every service client (requests, batches)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="A/B: also run --baseline-only from this checkout (rows <name>@base)",
    )
    parser.add_argument("--baseline-only", type=_names, default=["choreo-confluent"])
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--render", type=Path, default=None, help="redo the README from a JSON")
    args = parser.parse_args(argv)
    unknown = [i for i in (*args.only, *args.scale_only) if i not in IMPLEMENTATIONS]
    if unknown:
        parser.error(f"unknown implementation(s): {', '.join(unknown)}")
    args.only = [i for i in IMPLEMENTATIONS if i in args.only]
    if args.baseline_tree is not None:
        if not (args.baseline_tree / "bench" / "peers" / "runner.py").is_file():
            parser.error(f"--baseline-tree {args.baseline_tree}: no bench/peers/runner.py there")
        bad = [i for i in args.baseline_only if i not in IMPLEMENTATIONS or i in KAFKA_FREE]
        if bad:
            parser.error(f"--baseline-only: not a Kafka implementation: {', '.join(bad)}")
        args.only += [i + BASE_SUFFIX for i in args.baseline_only]
    if args.no_scale:
        args.scale_replicas = []
        args.scale_only = []  # no PostgreSQL server for scale rows that do not run
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the matrix, print a line per run, write the JSON and the README tables."""
    args = parse(argv)
    if args.render is not None:
        render(args.render)
        return 0
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    needs_pg = any(i in NEEDS_POSTGRES for i in (*args.only, *args.scale_only))
    clock = time.monotonic()
    with (
        broker(args.bootstrap, args.broker_pid) as (bootstrap, description, broker_pid),
        postgres(needs_pg, args.postgres_pid) as (pg_url, pg_description, pg_pid),
    ):
        print(f"broker: {description}; postgres: {pg_description}", flush=True)
        env = {
            "bootstrap": bootstrap,
            "broker_pid": broker_pid,
            "postgres_url": pg_url,
            "postgres_pid": pg_pid,
            "budget": args.budget,
            "warmup": args.warmup,
            "client_stats": args.client_stats,
            "baseline_tree": str(args.baseline_tree) if args.baseline_tree else None,
        }
        results = _matrix(args, env)
    add_ratios(results)
    scale_p = args.scale_partitions if args.scale_replicas else None
    report = {
        "started_at": started_at,
        "wall_s": round(time.monotonic() - clock, 1),
        "process_per_service": True,
        "machine": machine(),
        "broker": description,
        "postgres": pg_description,
        "method": {
            "repeats": args.repeat,
            "budget_s": args.budget,
            "warmup_sagas": args.warmup,
            "scale_partitions": scale_p,
            "scale_impls": args.scale_only if scale_p else [],
            "latency": "start event produced -> terminal event consumed by the harness's "
            "collector (DBOS: workflow's last step returned)",
            "cpu": "user+system CPU from /proc over the timed phase: cpu_ms_per_saga = sum over "
            "the service processes (one per service and replica); harness = injector and "
            "collector; broker = the Kafka JVM; postgres = the server's processes",
            "machine_busy_cores": "busy CPU seconds of the whole machine (/proc/stat, other "
            "users included) / timed wall seconds",
            "memory": "sum of the service processes' peak RSS (VmHWM)",
            "load": "all start events injected up front as fast as possible (throughput mode)",
            "baseline_tree": _described_tree(args.baseline_tree),
        },
        "results": results,
        "targets": targets(results),
    }
    print("\n" + table(results))
    print("\n".join(targets(results)))
    if scale_p:
        print("\n".join(scale_lines(results, scale_p, os.cpu_count())))
    print(f"wall time: {report['wall_s']} s")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = "peers-" + started_at.replace(":", "").replace("-", "") + ".json"
        (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
        write_readme(README, report, f"bench/results/{name}")
        print(f"\nwrote bench/results/{name} and the Peers tables in bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
