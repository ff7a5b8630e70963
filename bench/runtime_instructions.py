"""Count the CPU instructions per event of the runtime's hot path (callgrind, deterministic).

Wall and CPU times on a shared machine vary by tens of percent between runs; instruction
counts do not. This runs the memory-inbox worker of ``bench_runtime.py`` under valgrind's
callgrind twice over the same 6,000 pre-published events: once handling 1 batch of 500
after two warm-up batches, once handling 7. The difference of the two totals divided by
the 3,000 events between them is the work per event, with every set-up cost (imports,
filling the bus, compiling codecs, warm-up) cancelled out. ``PYTHONHASHSEED=0`` keeps
dict and set layouts, and therefore the count, the same from run to run.

    python bench/runtime_instructions.py            # prints instructions per event
    python bench/runtime_instructions.py --keep DIR # also keeps both callgrind outputs

Needs ``valgrind`` on the PATH; each run takes a minute or two (callgrind is ~50x slower
than the interpreter). To see where the instructions go, compare the two outputs function
by function with ``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_runtime as bench  # this directory is on sys.path when run as a script

from choreo.runtime import Worker, WorkerConfig
from choreo.store import MemoryInbox
from choreo.transports.memory import MemoryBus, MemoryTransport

EVENTS = 6_000
BATCH = 500
FEW, MANY = 1, 7


def handle(batches: int) -> None:
    """Fill a bus, warm a worker up with two batches, then handle ``batches`` more."""
    bus = MemoryBus()
    bench.fill(bus, EVENTS)
    _, stock, _, serde = bench.build()
    config = WorkerConfig(poll_timeout=0.0, max_poll_records=BATCH, group_id="g")
    worker = Worker(stock, MemoryTransport(bus), serde, config=config, inbox=MemoryInbox())
    worker.start()
    worker.run_once(0.0)
    worker.run_once(0.0)
    gc.collect()
    gc.freeze()  # as bench_runtime.py does before its timed runs
    for _ in range(batches):
        worker.run_once(0.0)
    worker.close()


def instructions(batches: int, out: Path) -> int:
    """Return the instructions callgrind counted for a run handling ``batches`` batches."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            str(batches),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{result.stderr}")
    return int(found.group(1))


def main() -> None:
    """Run both counts and print the instructions per event."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", type=Path, help="directory for the two callgrind outputs")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        handle(args.child)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        few = instructions(FEW, where / f"callgrind.{FEW}.out")
        many = instructions(MANY, where / f"callgrind.{MANY}.out")
    events = (MANY - FEW) * BATCH
    print(f"{(many - few) // events} instructions per event ({few:,} and {many:,} in total)")


if __name__ == "__main__":
    main()
