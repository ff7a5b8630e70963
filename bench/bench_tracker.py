"""Benchmark the tracker: rebuild every saga from an exported log, against a raw read loop.

Generates (once, cached under ``bench/.cache/``) an exported container file of N events
(default 1,000,000: about 150k sagas of the order-fulfilment domain, a realistic mix of
completed, declined, out-of-stock and still-running sagas, with notices), ordered as an
export of several topic-partitions would deliver them: roughly by time, but grouped per
partition within each fetch window, so a saga's events often arrive before their causes.

Then, in the same run:

- **raw_read** (the baseline): read the file and build each record's header dict, nothing
  else: the leanest loop that sees every event;
- **raw_decode**: read the file and decode each record's envelope
  (``Envelope.from_headers``), nothing else: a loop that also checks every header;
- **tracker**: read the same file, fold it with :class:`choreo.tracker.Tracker`, then
  answer the first page of the saga list (which builds the saga index);
- **queries**: on the rebuilt tracker, the latency of list pages (unfiltered, by status,
  by saga type, deep offset), counts and a deadline pass: what the saga index makes
  independent of the number of sagas;
- **memory**: the tracker pass again under ``tracemalloc``: peak traced memory divided
  by the finished sagas.

Targets: tracker rate >= 0.6x the raw_read rate (the ratio to raw_decode is reported
too); < 2 KiB per finished saga. Both wall and CPU (process) time are reported: on a
shared machine other tenants inflate wall time at random, CPU time much less; rates use
the best of the interleaved passes.

    python bench/bench_tracker.py                # full size, writes bench/results/tracker.json
    python bench/bench_tracker.py --events 100000 --no-write
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from choreo.model.envelope import Envelope, Role, headers_to_dict
from choreo.tracker import SagaQuery, Tracker
from choreo.tracker.model import SagaStatus
from choreo.tracker.sources import read_container_file, write_container_file
from choreo.transports.base import Record

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results" / "tracker.json"
SAGA = "OrderFulfillment"
PARTITIONS = 3
WINDOW_MS = 2_000  # an export's fetch window: records inside it come grouped per partition

# (event type, role, service, step) of each path through the saga
_CREATED = ("shop.orders.OrderCreated", Role.START, "order", "order.start")
_RESERVED = ("shop.inventory.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
_OUT_OF_STOCK = (
    "shop.inventory.InventoryReservationFailed",
    Role.FAILURE,
    "inventory",
    "inventory.reserve",
)
_AUTHORIZED = ("shop.payment.PaymentAuthorized", Role.STEP, "payment", "payment.authorize")
_DECLINED = ("shop.payment.PaymentDeclined", Role.FAILURE, "payment", "payment.authorize")
_RELEASED = (
    "shop.inventory.InventoryReleased",
    Role.COMPENSATION,
    "inventory",
    "inventory.reserve",
)
_CHARGED = ("shop.payment.PaymentCharged", Role.STEP, "payment", "payment.charge")
_SHIPPED = ("shop.shipping.ShipmentScheduled", Role.STEP, "shipping", "shipping.schedule")
_COMPLETED = ("shop.orders.OrderCompleted", Role.COMPLETED, "order", "order.complete")
_FAILED = ("shop.orders.OrderFailed", Role.FAILED, "order", "order.start")
_NOTIFIED = (
    "shop.notification.CustomerNotified",
    Role.NOTICE,
    "notification",
    "notification.notify",
)

PATHS = [
    # weight, events in causal (chain) order
    (0.84, [_CREATED, _RESERVED, _AUTHORIZED, _CHARGED, _SHIPPED, _COMPLETED, _NOTIFIED]),
    (0.09, [_CREATED, _RESERVED, _DECLINED, _RELEASED, _FAILED, _NOTIFIED]),
    (0.05, [_CREATED, _OUT_OF_STOCK, _FAILED, _NOTIFIED]),
    (0.02, [_CREATED, _RESERVED, _AUTHORIZED]),  # still running when exported
]


def _saga_events(rng: random.Random, start_ms: int) -> list[tuple[int, Envelope]]:
    """Return one saga's envelopes with their produced-at times, in causal order."""
    pick = rng.random()
    acc = 0.0
    path = PATHS[-1][1]
    for weight, candidate in PATHS:
        acc += weight
        if pick < acc:
            path = candidate
            break
    cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    out: list[tuple[int, Envelope]] = []
    now = start_ms
    previous: Envelope | None = None
    for event_type, role, service, step in path:
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        envelope = Envelope(
            event_type=event_type,
            event_id=event_id,
            correlation_id=cid,
            saga=SAGA,
            role=role,
            service=service,
            produced_at_ms=now,
            causation_id=previous.event_id if previous is not None else None,
            step=step,
        )
        out.append((now, envelope))
        previous = envelope
        now += rng.randint(2, 400)
    return out


def generate(path: Path, events: int, seed: int = 7) -> int:
    """Write an exported log of about ``events`` events to ``path``; return the count."""
    rng = random.Random(seed)
    produced: list[tuple[int, Envelope]] = []
    clock = 1_700_000_000_000
    while len(produced) < events:
        produced.extend(_saga_events(rng, clock))
        clock += rng.randint(0, 6)
    del produced[events:]
    produced.sort(key=lambda item: item[0])
    offsets: dict[tuple[str, int], int] = {}
    payload = bytes(64)

    def records() -> Iterator[Record]:
        window: list[tuple[str, int, Envelope]] = []
        window_end = produced[0][0] + WINDOW_MS if produced else 0

        def flush() -> Iterator[Record]:
            window.sort(key=lambda item: (item[0], item[1]))  # grouped per topic-partition
            for topic, partition, envelope in window:
                offset = offsets.get((topic, partition), 0)
                offsets[(topic, partition)] = offset + 1
                yield Record(
                    topic,
                    partition,
                    offset,
                    envelope.correlation_id.encode(),
                    payload,
                    tuple(envelope.to_headers()),
                    envelope.produced_at_ms,
                )
            window.clear()

        for at, envelope in produced:
            if at >= window_end:
                yield from flush()
                window_end = at + WINDOW_MS
            partition = zlib.crc32(envelope.correlation_id.encode()) % PARTITIONS
            window.append((envelope.event_type, partition, envelope))
        yield from flush()

    return write_container_file(path, records())


def cached_log(events: int) -> Path:
    """Return the path of the cached log of ``events`` events, generating it when missing."""
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = CACHE / f"tracker-log-{events}.avro"
    if not path.exists():
        started = time.perf_counter()
        generate(path, events)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def raw_read(path: Path) -> int:
    """Read every record and build its header dict, nothing else; return the count."""
    count = 0
    for record in read_container_file(path):
        headers = dict(record.headers)
        count += len(headers) > 0
    return count


def raw_decode(path: Path) -> int:
    """Read every record and decode its envelope (the headers), nothing else; return the count."""
    count = 0
    for record in read_container_file(path):
        Envelope.from_headers(headers_to_dict(record.headers))
        count += 1
    return count


def tracker_pass(path: Path) -> Tracker:
    """Fold every record with a fresh tracker and list the newest sagas; return the tracker."""
    tracker = Tracker(default_deadline_s=30.0)
    tracker.feed_many(read_container_file(path))
    tracker.find(limit=50)
    return tracker


def query_latencies(tracker: Tracker, repeat: int = 20) -> dict[str, float]:
    """Return the median milliseconds of typical questions to a rebuilt tracker."""
    newest = tracker.find(limit=1)[0]
    questions: dict[str, Callable[[], object]] = {
        "page": lambda: tracker.find(limit=50),
        "page_failed": lambda: tracker.find(SagaQuery(status=SagaStatus.FAILED), limit=50),
        "page_pending": lambda: tracker.find(SagaQuery(status=SagaStatus.PENDING), limit=50),
        "page_saga_type": lambda: tracker.find(SagaQuery(saga=SAGA), limit=50),
        "page_offset_10000": lambda: tracker.find(limit=50, offset=10_000),
        "page_time_window": lambda: tracker.find(
            SagaQuery(until_ms=(newest.started_at_ms or 0) - 60_000), limit=50
        ),
        "count_completed": lambda: tracker.count(SagaQuery(status=SagaStatus.COMPLETED)),
        "counts": tracker.counts,
        "check_deadlines": lambda: tracker.check_deadlines(0),
    }
    result = {}
    for name, ask in questions.items():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            ask()
            times.append((time.perf_counter() - started) * 1000)
        result[name] = round(sorted(times)[len(times) // 2], 3)
    return result


def timed(run: Callable[[], T]) -> tuple[T, float, float]:
    """Return ``run()``'s result with its wall and CPU seconds."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def memory_pass(path: Path) -> dict[str, float]:
    """Fold the file under tracemalloc; return the peak and retained bytes per finished saga."""
    gc.collect()
    tracemalloc.start()
    tracker = Tracker(default_deadline_s=30.0)
    tracker.feed_many(read_container_file(path))
    tracker.find(limit=50)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    counts = tracker.counts()
    finished = counts[SagaStatus.COMPLETED] + counts[SagaStatus.FAILED]
    return {
        "finished_sagas": finished,
        "peak_bytes": peak,
        "retained_bytes": current,
        "peak_bytes_per_finished_saga": round(peak / max(1, finished), 1),
        "retained_bytes_per_finished_saga": round(current / max(1, finished), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and by default write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes of each loop")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--no-write", action="store_true", help="do not write results JSON")
    parser.add_argument("--profile", action="store_true", help="cProfile one tracker pass")
    args = parser.parse_args(argv)

    path = cached_log(args.events)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        tracker_pass(path)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return 0

    loops: dict[str, Callable[[], object]] = {
        "raw_read": lambda: raw_read(path),
        "raw_decode": lambda: raw_decode(path),
        "tracker": lambda: tracker_pass(path),
    }
    wall: dict[str, list[float]] = {name: [] for name in loops}
    cpu: dict[str, list[float]] = {name: [] for name in loops}
    tracker: Tracker | None = None
    for _ in range(args.repeat):  # interleaved, so every loop sees the same machine load
        for name, run in loops.items():
            tracker = None
            outcome, wall_s, cpu_s = timed(run)
            wall[name].append(wall_s)
            cpu[name].append(cpu_s)
            if isinstance(outcome, Tracker):
                tracker = outcome
    assert tracker is not None
    records = tracker.stats.records
    rates = {
        clock: {name: round(records / min(times[name])) for name in loops}
        for clock, times in (("wall", wall), ("cpu", cpu))
    }
    counts = tracker.counts()
    result: dict[str, object] = {
        "benchmark": "tracker rebuild from an exported container file",
        "events": records,
        "sagas": tracker.total(),
        "counts": {status.value: n for status, n in counts.items() if n},
        "stats": tracker.stats.as_dict(),
        "events_per_s": rates,
        "baseline": "raw_read",
        "ratio_tracker_to_raw_read": {
            clock: round(rate["tracker"] / rate["raw_read"], 3) for clock, rate in rates.items()
        },
        "ratio_tracker_to_raw_decode": {
            clock: round(rate["tracker"] / rate["raw_decode"], 3) for clock, rate in rates.items()
        },
        "target_ratio": 0.6,
        "notes": (
            "baseline: raw_read = read the container file and build each record's header "
            "dict (the leanest loop); raw_decode = read and decode each record's envelope "
            "(Envelope.from_headers); tracker = read, fold with Tracker.feed_many and list "
            f"the first page (building the saga index). Rates use the best of {args.repeat} "
            "interleaved passes; cpu = process time, which a shared machine's other tenants "
            "do not inflate, wall = elapsed time. queries_ms = median latency on the "
            "rebuilt tracker."
        ),
        "wall_seconds": {name: [round(t, 2) for t in times] for name, times in wall.items()},
        "cpu_seconds": {name: [round(t, 2) for t in times] for name, times in cpu.items()},
    }
    result["queries_ms"] = query_latencies(tracker)
    tracker = None
    if not args.no_memory:
        memory = memory_pass(path)
        result["memory"] = memory
        result["target_bytes_per_finished_saga"] = 2048
    result["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    for clock in ("cpu", "wall"):
        rate = rates[clock]
        print(
            f"{clock}: tracker {rate['tracker']:,} ev/s = "
            f"{rate['tracker'] / rate['raw_read']:.2f}x raw_read (the baseline, "
            f"{rate['raw_read']:,} ev/s), {rate['tracker'] / rate['raw_decode']:.2f}x "
            f"raw_decode ({rate['raw_decode']:,} ev/s)"
        )
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
