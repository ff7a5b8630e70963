"""What a handler's SQL costs on PostgreSQL, without choreo: plain psycopg loops, one suspect each.

The ``postgresql / update`` cell of ``bench_stores.py`` runs one ``UPDATE bench_counter
SET n = n + 1 WHERE id = ?`` per event (100 counter rows, batches of 500) inside the
batch's transaction, each handler attempt in a savepoint. This benchmark replays that
statement traffic with psycopg alone, on the same kind of server, so each part of the
cost is seen apart from the runtime:

- **select**: ``SELECT %s`` per event — one bare round trip;
- **update**: the ``UPDATE`` per event, no savepoint;
- **savepoint + update**: ``RELEASE SAVEPOINT h; SAVEPOINT h`` then the ``UPDATE`` — two
  round trips per event, what the store did until it sent the savepoint ahead;
- **savepoint ahead + update**: the same statements, the savepoint sent after the
  previous ``UPDATE`` and its answer read just before the next (what
  :class:`~choreo.store.PostgresStore` does now);
- **hot rows (savepoint + update over R rows)**: the same 500 updates per transaction
  over 500, 100, 10 or 1 rows (1, 5, 50, 500 updates of a row per transaction): what
  PostgreSQL itself pays for rows updated many times in one transaction, each time in
  another (released) subtransaction;
- **hot rows (nested savepoints + update over R rows)**: the same with savepoints that are
  never released (500 nested subtransactions per transaction), over 100 or 1 rows.

Every cell gets a fresh table, a warm-up batch, then ``--batches`` transactions of 500
events; cells run interleaved in ``--repeat`` rounds. Per event: wall time, this
process's CPU, and the CPU of the server backend serving the connection (``/proc``, so
the server must run on this machine).

    python bench/bench_pg_handler_sql.py                  # prints; --write records JSON
    python bench/bench_pg_handler_sql.py --batches 10 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import generators

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stores import _postgres_url, spread

RESULTS = Path(__file__).parent / "results"
EVENTS = 500  # per transaction, the worker's batch
UPDATE = "UPDATE t SET n = n + 1 WHERE id = %s"
NEXT_SAVEPOINT = b"RELEASE SAVEPOINT h; SAVEPOINT h"

Loop = Callable[[psycopg.Connection, list[int]], None]


def _select(conn: psycopg.Connection, keys: list[int]) -> None:
    for key in keys:
        conn.execute("SELECT %s", (key,))


def _update(conn: psycopg.Connection, keys: list[int]) -> None:
    for key in keys:
        conn.execute(UPDATE, (key,))


def _savepoint_update(conn: psycopg.Connection, keys: list[int]) -> None:
    conn.execute("SAVEPOINT h")
    for index, key in enumerate(keys):
        if index:
            conn.execute("RELEASE SAVEPOINT h; SAVEPOINT h")
        conn.execute(UPDATE, (key,))


def _nested_savepoint_update(conn: psycopg.Connection, keys: list[int]) -> None:
    for key in keys:  # a savepoint per event that is never released: they nest
        conn.execute("SAVEPOINT h")
        conn.execute(UPDATE, (key,))


def _savepoint_ahead_update(conn: psycopg.Connection, keys: list[int]) -> None:
    conn.execute("SAVEPOINT h")
    pgconn = conn.pgconn
    for index, key in enumerate(keys):
        if index:  # read the answer to the savepoint sent after the previous UPDATE
            for result in conn.wait(generators.fetch_many(pgconn)):
                if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                    raise psycopg.errors.error_from_result(result)
        conn.execute(UPDATE, (key,))
        if index < len(keys) - 1:
            pgconn.send_query(NEXT_SAVEPOINT)
            conn.wait(generators.send(pgconn))


def _cells() -> dict[str, tuple[Loop, int]]:
    """Return each cell's loop and its number of rows."""
    cells: dict[str, tuple[Loop, int]] = {
        "select": (_select, 100),
        "update": (_update, 100),
        "savepoint + update": (_savepoint_update, 100),
        "savepoint ahead + update": (_savepoint_ahead_update, 100),
    }
    for rows in (500, 10, 1):  # 100 rows is "savepoint + update"
        cells[f"hot rows: savepoint + update over {rows} rows"] = (_savepoint_update, rows)
    for rows in (100, 1):
        cells[f"hot rows: nested savepoints + update over {rows} rows"] = (
            _nested_savepoint_update,
            rows,
        )
    return cells


def _backend_cpu(pid: int) -> float:
    """Return the CPU seconds the server process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cell(url: str, loop: Loop, rows: int, batches: int) -> tuple[float, float, float]:
    """Return (wall, client CPU, backend CPU) µs per event of ``loop`` over ``rows`` rows."""
    conn = psycopg.connect(url, autocommit=False)
    schema = f"h_{uuid.uuid4().hex[:10]}"
    try:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n BIGINT)")
        conn.execute("INSERT INTO t SELECT g, 0 FROM generate_series(0, %s) g", (rows - 1,))
        conn.commit()
        keys = [
            [zlib.crc32(f"order-{b:04d}{i:04d}".encode()) % rows for i in range(EVENTS)]
            for b in range(batches + 1)
        ]
        loop(conn, keys[0])  # warm-up: prepared statements, caches
        conn.commit()
        pid = conn.info.backend_pid
        backend, cpu, started = _backend_cpu(pid), time.process_time(), time.perf_counter()
        for batch in keys[1:]:
            loop(conn, batch)
            conn.commit()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        backend = _backend_cpu(pid) - backend
        total = conn.execute("SELECT sum(n) FROM t").fetchone()
        if loop is not _select and (total is None or total[0] != EVENTS * (batches + 1)):
            raise RuntimeError(f"{total} updates for {EVENTS * (batches + 1)}")
        conn.rollback()
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.commit()
    finally:
        conn.close()
    events = EVENTS * batches
    return wall / events * 1e6, cpu / events * 1e6, backend / events * 1e6


def main() -> None:
    """Run every cell in ``--repeat`` interleaved rounds; print (and record) the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=40, help="timed transactions per cell")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--write", action="store_true", help="record bench/results/*.json")
    args = parser.parse_args()
    stops: list[Callable[[], None]] = []
    cells = _cells()
    measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cells}
    try:
        url = os.environ.get("CHOREO_POSTGRES_URL") or _postgres_url(stops)
        for _ in range(args.repeat):
            for name, (loop, rows) in cells.items():
                measured[name].append(run_cell(url, loop, rows, args.batches))
    finally:
        for stop in reversed(stops):
            stop()
    report = {
        "benchmark": "pg_handler_sql",
        "events_per_transaction": EVENTS,
        "transactions": args.batches,
        "repeats": args.repeat,
        "method": "plain psycopg loops, cells interleaved per round; median [min, max]",
        "microseconds_per_event": {
            name: {
                "wall": spread([m[0] for m in runs], 1),
                "client_cpu": spread([m[1] for m in runs], 1),
                "backend_cpu": spread([m[2] for m in runs], 1),
            }
            for name, runs in measured.items()
        },
        "load_average_1m": round(os.getloadavg()[0], 1),
        "python": sys.version.split()[0],
        "psycopg": psycopg.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%MZ")
        path = RESULTS / f"pg-handler-sql-{stamp}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
