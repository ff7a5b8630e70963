"""Benchmark one hop of the runtime on each store: memory, SQLite and PostgreSQL, in one run.

Over the same N pre-published records on the in-process memory bus (so the transport's
cost is identical in every cell and only the store differs), a
:class:`~choreo.runtime.worker.Worker` in its production loop (``Worker.run``, until the
last batch is delivered) polls batches of 500, dedupes through the store's
inbox, calls the handler, stores the emitted events in the outbox and the handled ids in
the inbox in ONE store transaction per batch, commits, publishes and commits offsets.
Cells:

- **memory / none**: :class:`~choreo.store.MemoryStore`, a handler that runs no SQL — the
  baseline of every ratio;
- **sqlite-full / none**, **sqlite-normal / none**: :class:`~choreo.store.SqliteStore`
  on a temporary file, ``durability="full"`` (the default: fsync per commit) and
  ``"normal"``;
- **postgresql / none**: :class:`~choreo.store.PostgresStore` on a real PostgreSQL server
  on this machine (``$CHOREO_POSTGRES_URL``, else ``scripts/postgres_server.py``: the
  machine's binaries, default settings, ``fsync`` and ``synchronous_commit`` on);
- **… / update**: the same stores with a handler that runs one ``UPDATE`` through
  ``ctx.db`` (a counter row out of 100, in the batch's transaction).

Two clocks; the first batch (500 records: group join, codec compilation) is a warm-up
outside the timing. The cells run interleaved in each of ``--repeat`` rounds (at least 3
for a recorded run); every figure is the median over the rounds with its range, and a
ratio is taken against memory / none of the same round before it is summarised:

- **wall**: ``time.perf_counter`` — includes the commit's fsync and every wait, but on a
  shared machine also every other process's load;
- **cpu**: CPU seconds of this process (all its threads) plus, for PostgreSQL, of the
  local server's processes (postmaster and its children, read from ``/proc``) — the work
  a hop costs, stable under load, blind to fsync waits.

    python bench/bench_stores.py                  # writes bench/results/stores.json
    python bench/bench_stores.py --events 5000 --repeat 1 --no-write
    python bench/bench_stores.py --baseline-ref main   # + "postgresql@main / …" cells: before/after

``--baseline-ref REF`` adds two cells running the PostgreSQL store of git revision ``REF``
(its ``choreo/store/postgres.py``, ``pg_outbox.py`` and ``outbox.py``, loaded from
``git show``) beside this one's, ``postgresql@REF / none`` and ``… / update``, in the
same rounds on the same server: a before/after of one run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runtime as rt
from bench_runtime import spread

from choreo.choreography.service import Service
from choreo.model.context import Context
from choreo.runtime import Worker, WorkerConfig
from choreo.runtime.middleware import Middleware, default_middleware
from choreo.store import Migration, SqliteStore, Store, execute, executemany
from choreo.transports.memory import MemoryBus, MemoryTransport

RESULTS = Path(__file__).parent / "results" / "stores.json"
REPO = Path(__file__).resolve().parent.parent
COUNTERS = 100


def _counter_migrations() -> list[Migration]:
    """Return the update handler's table: 100 counters."""

    def seed(conn: Any, dialect: str) -> None:
        executemany(
            conn,
            "INSERT INTO bench_counter (id, n) VALUES (?, 0)",
            [(i,) for i in range(COUNTERS)],
        )

    return [
        Migration(1, "counters", "CREATE TABLE bench_counter (id INTEGER PRIMARY KEY, n BIGINT)"),
        Migration(2, "counter rows", seed),
    ]


def build_service(with_update: bool) -> Service:
    """Return the benchmarked service: the runtime benchmark's, or one UPDATE per event."""
    _, stock, saga, _ = rt.build()
    if not with_update:
        return stock
    counter = Service("counter", sagas=[saga], migrations=_counter_migrations())

    @counter.step(on=rt.ItemPlaced, emits=rt.ItemReserved)
    def reserve(event: rt.ItemPlaced, ctx: Context) -> rt.ItemReserved:
        execute(
            ctx.db,
            "UPDATE bench_counter SET n = n + 1 WHERE id = ?",
            (zlib.crc32(event.order_id.encode()) % COUNTERS,),
        )
        return rt.ItemReserved(
            event.order_id,
            event.customer_id,
            event.sku,
            event.quantity,
            event.amount_cents,
            event.currency,
        )

    return counter


def server_cpu(store: Store) -> float:
    """Return the CPU seconds the local PostgreSQL server behind ``store`` used so far (or 0)."""
    if store.dialect != "postgresql":
        return 0.0
    store.begin()
    try:
        data_dir = execute(store.connection, "SHOW data_directory").fetchone()[0]
    except Exception:
        store.rollback()
        return 0.0
    store.commit()
    try:
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0  # not on this machine
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if postmaster in (pid, ppid):
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


class _Delivered(Middleware):
    """Stops the worker's loop once every record was delivered; notes when (both clocks)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.stop = threading.Event()
        self.next: dict[Any, int] = {}
        self.at = self.cpu = 0.0

    def after_commit(self, worker: Any, offsets: dict[Any, int]) -> None:
        self.next.update(offsets)
        if sum(self.next.values()) >= self.total:
            self.at, self.cpu = time.perf_counter(), time.process_time()
            self.stop.set()


def run_cell(bus: MemoryBus, store: Store, *, with_update: bool) -> tuple[float, float]:
    """Let a worker on ``store`` handle every record on ``bus``; return (wall, cpu) seconds."""
    service = build_service(with_update)
    _, _, _, serde = rt.build()
    config = WorkerConfig(
        poll_timeout=0.0, max_poll_records=500, group_id=f"g-{uuid.uuid4().hex[:8]}"
    )
    expected = len(bus.records("bench.shop.ItemPlaced"))
    done = _Delivered(expected)
    middleware = [*default_middleware(), done]
    worker = Worker(
        service, MemoryTransport(bus), serde, config=config, inbox=store, middleware=middleware
    )
    worker.start()
    worker.run_once(0.0)  # warm-up batch, outside the timing
    gc.collect()
    gc.freeze()
    server_before = server_cpu(store)
    cpu_started = time.process_time()
    started = time.perf_counter()
    worker.run(done.stop)  # the production loop, until the last batch is delivered
    seconds = done.at - started
    cpu = done.cpu - cpu_started + server_cpu(store) - server_before
    handled = len(bus.records("bench.shop.ItemReserved"))
    worker.close()
    if handled != expected:
        raise RuntimeError(f"{service.name} on {store!r}: {handled} emitted for {expected}")
    if with_update:
        store.begin()
        total = execute(store.connection, "SELECT sum(n) FROM bench_counter").fetchone()[0]
        store.commit()
        if total != expected:
            raise RuntimeError(f"{total} updates for {expected} events on {store!r}")
    return seconds, cpu


def _postgres_url(stack: list[Callable[[], None]]) -> str:
    """Return ``$CHOREO_POSTGRES_URL`` or start scripts/postgres_server.py's server."""
    configured = os.environ.get("CHOREO_POSTGRES_URL")
    if configured:
        return configured
    spec = importlib.util.spec_from_file_location(
        "postgres_server", REPO / "scripts" / "postgres_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["postgres_server"] = module
    spec.loader.exec_module(module)
    server = module.PostgresServer(port=0)
    stack.append(server.stop)
    server.start()
    return str(server.url)


def baseline_store(ref: str) -> Callable[..., Store]:
    """Return the ``PostgresStore`` class of git revision ``ref`` (its three store modules)."""
    modules: dict[str, types.ModuleType] = {}
    for name in ("outbox", "pg_outbox", "postgres"):
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{ref}:choreo/store/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for module_name in ("outbox", "pg_outbox"):  # the ref's modules, not this tree's
            source = source.replace(
                f"from choreo.store.{module_name} import", f"from _baseline_{module_name} import"
            )
        module = types.ModuleType(f"_baseline_{name}")
        sys.modules[module.__name__] = module
        exec(compile(source, f"{ref}:choreo/store/{name}.py", "exec"), module.__dict__)
        modules[name] = module
    store: Callable[..., Store] = modules["postgres"].PostgresStore
    return store


def main() -> None:
    """Run every cell in ``--repeat`` interleaved rounds; print and record the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--only", help="comma-separated cells to run (memory / none, the baseline, always runs)"
    )
    parser.add_argument("--baseline-ref", help="also run the PostgreSQL store of this git ref")
    args = parser.parse_args()
    only = None if args.only is None else {c.strip() for c in args.only.split(",")}
    stops: list[Callable[[], None]] = []
    try:
        url = _postgres_url(stops)
        report = measure(args.events, args.repeat, url, only, args.baseline_ref)
    finally:
        for stop in reversed(stops):
            stop()
    print(json.dumps(report, indent=2))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


def _clock_summary(rates: dict[str, list[float]], rate_key: str, micros_key: str) -> dict[str, Any]:
    """Return rates, µs per event and per-repeat ratios against memory / none, summarised."""
    base = rates["memory / none"]
    return {
        rate_key: {name: spread(values, 0) for name, values in rates.items()},
        micros_key: {name: spread([1e6 / v for v in values], 2) for name, values in rates.items()},
        "ratio_vs_memory": {
            name: spread([v / b for v, b in zip(values, base, strict=True)])
            for name, values in rates.items()
        },
    }


def measure(
    count: int, repeat: int, url: str, only: set[str] | None = None, ref: str | None = None
) -> dict[str, Any]:
    """Return the report of ``repeat`` rounds over ``count`` events per cell."""
    from choreo.store.postgres import PostgresStore

    cells: dict[str, Callable[[Path], Store]] = {
        "memory / none": lambda _: rt.MemoryInbox(),
        "sqlite-full / none": lambda tmp: SqliteStore(tmp / "full.db"),
        "sqlite-normal / none": lambda tmp: SqliteStore(tmp / "normal.db", durability="normal"),
        "postgresql / none": lambda _: PostgresStore(url, schema=f"b_{uuid.uuid4().hex[:10]}"),
        "sqlite-full / update": lambda tmp: SqliteStore(tmp / "update.db"),
        "postgresql / update": lambda _: PostgresStore(url, schema=f"b_{uuid.uuid4().hex[:10]}"),
    }
    if ref is not None:
        before = baseline_store(ref)
        for handler in ("none", "update"):
            cells[f"postgresql@{ref} / {handler}"] = lambda _: before(
                url, schema=f"b_{uuid.uuid4().hex[:10]}"
            )
    if only is not None:  # memory / none and the baseline of each chosen cell always run
        keep = {"memory / none", *(c.replace("postgresql", f"postgresql@{ref}") for c in only)}
        cells = {n: f for n, f in cells.items() if n in only or n in keep}
    seconds: dict[str, list[float]] = {name: [] for name in cells}
    cpu: dict[str, list[float]] = {name: [] for name in cells}
    for _ in range(repeat):
        for name, open_store in cells.items():
            gc.unfreeze()
            bus = MemoryBus()
            rt.fill(bus, count)
            with tempfile.TemporaryDirectory() as tmp:
                store = open_store(Path(tmp))
                try:
                    wall, used = run_cell(bus, store, with_update=name.endswith("update"))
                    seconds[name].append(wall)
                    cpu[name].append(used)
                finally:
                    store.close()
    timed = count - 500
    wall_rates = {name: [timed / v for v in values] for name, values in seconds.items()}
    rates = wall_rates
    cpu_rates = {name: [timed / v for v in values] for name, values in cpu.items()}
    on_wall = _clock_summary(wall_rates, "events_per_second", "microseconds_per_event")
    on_cpu = _clock_summary(cpu_rates, "events_per_cpu_second", "cpu_microseconds_per_event")
    target = "postgresql / none"
    return {
        "benchmark": "stores",
        "events": count,
        "repeats": repeat,
        "method": (
            "cells interleaved within each repeat; every figure is the median over the "
            "repeats with [min, max]; a ratio is taken against memory / none of the same "
            "repeat, then summarised"
        ),
        "wall": on_wall,
        "cpu": on_cpu,
        "target": {f"{target} vs memory / none": 0.5},
        "met_wall": target in rates and on_wall["ratio_vs_memory"][target]["median"] >= 0.5,
        "met_cpu": target in rates and on_cpu["ratio_vs_memory"][target]["median"] >= 0.5,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "clock": "wall (perf_counter) and cpu (this process + local PostgreSQL server)",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
