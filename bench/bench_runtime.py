"""Benchmark the runtime's per-event cost on the memory transport against a raw Avro loop.

In one run, over the same N pre-published records (a realistic small event, full choreo
envelope with a W3C traceparent):

- **raw**: fastavro ``schemaless_reader`` + ``schemaless_writer`` of each record's body,
  nothing else (the floor any Avro runtime pays);
- **hop**: the lean hand-written hop on the same transport: poll a batch from the memory
  bus, fastavro decode + encode, publish with the incoming headers, commit the offsets
  once per batch (what the runtime does minus envelopes, dedupe, outbox and dispatch);
- **serde**: choreo's own :class:`~choreo.avro.serde.EventSerde` decode + encode of each record
  (the codec the runtime uses);
- **runtime (memory inbox)**: a :class:`~choreo.runtime.worker.Worker` consuming the
  records from a :class:`~choreo.transports.memory.MemoryBus`: envelope read, dedupe,
  dispatch to a trivial handler, encode with deterministic ids and propagated headers,
  outbox, publish, flush, offset commit, batch by batch (500 records);
- **runtime (sqlite inbox)**: the same with a durable :class:`SqliteInbox` (WAL,
  synchronous=NORMAL) on a temporary file;
- **runtime (no publish)**: the memory-inbox run with a producer that drops what it is
  given: the runtime's own cost without the memory transport's publish and storage;
- **runtime (gc off)**: the memory-inbox run with the garbage collector disabled during
  the timed loop: the difference to the memory run is what collections cost (the bus
  keeps every emitted record, a few new tuples each).

Targets: runtime (memory inbox) >= 50,000 events/s on one core and >= 0.5x raw.

``components`` in the results are the hot per-event costs of the runtime's parts, each
timed alone on one 500-record batch (so without the cold-memory and collection costs of
the full runs): where a memory-inbox event's microseconds go.

Times are CPU seconds of this process (``time.process_time``), so other processes on a
shared machine do not bill the runtime. The configurations run interleaved in each of
``--repeat`` rounds (at least 3 for a recorded run); every figure is the median over the
rounds with its range, and each ratio is taken within one round before it is summarised.
The pre-filled bus stands for the broker's storage: it is moved out of the garbage
collector's view (``gc.freeze``) before each timed run, as ``choreo run`` does with
everything loaded at start-up, so the size of the input does not bill the runtime's
collections.

    python bench/bench_runtime.py               # writes bench/results/runtime.json
    python bench/bench_runtime.py --events 20000 --no-write
    python bench/bench_runtime.py --profile     # cProfile of the memory-inbox run
    python bench/bench_runtime.py --baseline-ref main --events 50000 --repeat 6
        # A/B: main's choreo against this checkout, alternating rounds, each in a fresh
        # interpreter; writes bench/results/runtime-ab.json

For a sampling profile without cProfile's per-call overhead, run the memory-inbox loop
under ``py-spy record -r 2000 -f raw``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import fastavro

from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import LocalSchemaRegistry
from choreo.avro.serde import EventSerde
from choreo.choreography.service import Saga, Service
from choreo.model.events import Event
from choreo.runtime import Publisher, SqliteInbox, Worker, WorkerConfig
from choreo.runtime.routing import scan_headers
from choreo.runtime.tracing import all_valid
from choreo.store import Inbox, MemoryInbox
from choreo.transports.memory import MemoryBus, MemoryTransport

RESULTS = Path(__file__).parent / "results" / "runtime.json"
AB_RESULTS = Path(__file__).parent / "results" / "runtime-ab.json"

ITEM_PLACED = {
    "type": "record",
    "name": "ItemPlaced",
    "namespace": "bench.shop",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "customer_id", "type": "string"},
        {"name": "sku", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "amount_cents", "type": "long"},
        {"name": "currency", "type": "string"},
    ],
}
ITEM_RESERVED = {**ITEM_PLACED, "name": "ItemReserved"}
DONE = {
    "type": "record",
    "name": "Done",
    "namespace": "bench.shop",
    "fields": [{"name": "order_id", "type": "string"}],
}


@dataclass(frozen=True, slots=True)
class ItemPlaced(Event):
    """The benchmark's incoming event."""

    __avro_name__: ClassVar[str] = "bench.shop.ItemPlaced"
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    amount_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class ItemReserved(Event):
    """The benchmark's emitted event (same shape)."""

    __avro_name__: ClassVar[str] = "bench.shop.ItemReserved"
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    amount_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class Done(Event):
    """The saga's terminal event (declared, never emitted here)."""

    __avro_name__: ClassVar[str] = "bench.shop.Done"
    order_id: str


def build() -> tuple[Service, Service, Saga, EventSerde]:
    """Return the starting service, the benchmarked service, the saga and the serde."""
    registry = LocalSchemaRegistry()
    for schema in (ITEM_PLACED, ITEM_RESERVED, DONE):
        registry.register(schema)
    serde = EventSerde(SingleObjectCodec(registry), [ItemPlaced, ItemReserved, Done])
    saga = Saga("Bench", start=ItemPlaced, completed=Done, failed=Done)
    shop = Service("shop", sagas=[saga])
    shop.starts(saga)
    stock = Service("stock", sagas=[saga])

    @stock.step(on=ItemPlaced, emits=ItemReserved)
    def reserve(event: ItemPlaced) -> ItemReserved:
        return ItemReserved(
            event.order_id,
            event.customer_id,
            event.sku,
            event.quantity,
            event.amount_cents,
            event.currency,
        )

    return shop, stock, saga, serde


def fill(bus: MemoryBus, count: int) -> None:
    """Publish ``count`` start events onto ``bus`` (through the Publisher, with traces)."""
    shop, _, saga, serde = build()
    publisher = Publisher(shop, MemoryTransport(bus), serde)
    for i in range(count):
        publisher.start(
            saga,
            ItemPlaced(f"order-{i:08d}", f"customer-{i % 977:05d}", "SKU-12345", 2, 1999, "EUR"),
        )
    publisher.close()


def _settle() -> None:
    """Collect garbage, then freeze what is alive (the bus) out of the collector's view."""
    gc.collect()
    gc.freeze()


def run_raw(bus: MemoryBus) -> float:
    """Decode and re-encode every record body with fastavro; return the CPU seconds taken."""
    records = bus.records("bench.shop.ItemPlaced")
    schema = fastavro.parse_schema(ITEM_PLACED)
    out_schema = fastavro.parse_schema(ITEM_RESERVED)
    reader, writer = fastavro.schemaless_reader, fastavro.schemaless_writer
    _settle()
    started = time.process_time()
    for record in records:
        datum = reader(io.BytesIO(record.value[10:]), schema, None)  # type: ignore[index]
        buffer = io.BytesIO()
        writer(buffer, out_schema, datum)
        buffer.getvalue()
    return time.process_time() - started


def run_hop(bus: MemoryBus) -> float:
    """Poll, fastavro decode + encode, publish and commit by hand; return the CPU seconds."""
    transport = MemoryTransport(bus)
    consumer = transport.consumer("bench-hop")
    consumer.subscribe(["bench.shop.ItemPlaced"])
    producer = transport.producer()
    schema = fastavro.parse_schema(ITEM_PLACED)
    out_schema = fastavro.parse_schema(ITEM_RESERVED)
    reader, writer = fastavro.schemaless_reader, fastavro.schemaless_writer
    _settle()
    started = time.process_time()
    while batch := consumer.poll(500, 0.0):
        for record in batch:
            datum = reader(io.BytesIO(record.value[10:]), schema, None)  # type: ignore[index]
            buffer = io.BytesIO()
            writer(buffer, out_schema, datum)
            producer.publish(
                "bench.hop.out", buffer.getvalue(), key=record.key, headers=record.headers
            )
        producer.flush()
        last = batch[-1]
        consumer.commit({last.topic_partition: last.offset + 1})
    seconds = time.process_time() - started
    consumer.close()
    return seconds


def run_serde(bus: MemoryBus) -> float:
    """Decode and re-encode every record with choreo's EventSerde; return the seconds taken."""
    _, _, _, serde = build()
    records = bus.records("bench.shop.ItemPlaced")
    _settle()
    started = time.process_time()
    for record in records:
        event: Any = serde.decode("bench.shop.ItemPlaced", record.value)  # type: ignore[arg-type]
        serde.encode(
            ItemReserved(
                event.order_id,
                event.customer_id,
                event.sku,
                event.quantity,
                event.amount_cents,
                event.currency,
            )
        )
    return time.process_time() - started


class _DroppingProducer:
    """A producer that accepts records and drops them (isolates the runtime's own cost)."""

    transactional = False

    def __init__(self) -> None:
        self.count = 0

    def publish(self, topic: str, value: Any, *, key: Any = None, headers: Any = ()) -> None:
        """Count the record and drop it."""
        self.count += 1

    def flush(self, timeout: float | None = None) -> None:
        """Do nothing: nothing is in flight."""

    def close(self) -> None:
        """Do nothing."""


class _DroppingTransport(MemoryTransport):
    """The memory transport with producers that drop what they publish."""

    def __init__(self, bus: MemoryBus) -> None:
        super().__init__(bus)
        self.dropping = _DroppingProducer()

    def producer(self, *, transactional_id: str | None = None) -> Any:
        """Return the dropping producer."""
        return self.dropping


def run_worker(
    bus: MemoryBus,
    inbox: Inbox,
    *,
    profile: bool = False,
    publish: bool = True,
    collect: bool = True,
) -> float:
    """Let a worker handle every record on ``bus``; return the CPU seconds taken.

    ``collect=False`` disables the garbage collector during the timed loop.
    """
    _, stock, _, serde = build()
    group = f"stock-{'pub' if publish else 'drop'}{'' if collect else '-nogc'}"
    config = WorkerConfig(poll_timeout=0.0, max_poll_records=500, group_id=group)
    transport = MemoryTransport(bus) if publish else _DroppingTransport(bus)
    worker = Worker(stock, transport, serde, config=config, inbox=inbox)
    worker.start()
    worker.run_once(0.0)  # warm up: join the group, compile codecs (counted below anyway)
    expected = len(bus.records("bench.shop.ItemPlaced"))
    profiler = cProfile.Profile() if profile else None
    _settle()
    if not collect:
        gc.disable()
    started = time.process_time()
    if profiler:
        profiler.enable()
    while worker.run_once(0.0):
        pass
    if profiler:
        profiler.disable()
    seconds = time.process_time() - started
    gc.enable()
    if isinstance(transport, _DroppingTransport):
        handled = transport.dropping.count
    else:
        handled = len(bus.records("bench.shop.ItemReserved"))
    worker.close()
    if handled != expected:
        raise RuntimeError(f"worker emitted {handled} events for {expected} records")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return seconds


def components() -> dict[str, float]:
    """Return the hot cost (µs per event) of each part of a memory-inbox hop, timed alone."""
    bus = MemoryBus()
    fill(bus, 500)
    batch = bus.records("bench.shop.ItemPlaced")
    _, stock, _, serde = build()
    worker = Worker(stock, _DroppingTransport(bus), serde, config=WorkerConfig(group_id="c"))
    worker.start()
    worker.emitter.produced_at = ("choreo-produced-at", b"1700000000000")  # as a batch does
    worker.emitter.traces_valid = True  # as the dispatcher finds for this batch
    route = worker.dispatcher.routes["bench.shop.ItemPlaced"]
    scanned = [scan_headers(r.headers) for r in batch]
    values = [r.value or b"" for r in batch]
    events = [serde.decode("bench.shop.ItemPlaced", v) for v in values]
    handler = route.func
    emitted = [handler(e) for e in events]
    pairs = [(f, e) for f, e in zip(scanned, emitted, strict=True) if f is not None]
    encode_one = worker.emitter.emit_one
    producer = MemoryTransport(MemoryBus()).producer()
    publish_many = producer.publish_many
    outbox = [encode_one(route, f, e) for f, e in pairs]
    source = MemoryBus()
    source_producer = MemoryTransport(source).producer()
    for r in batch:
        source_producer.publish("in", r.value, key=r.key, headers=r.headers)
    consumer = MemoryTransport(source).consumer("c")
    consumer.subscribe(["in"])
    consumer.poll(1, 0.0)

    def poll_all() -> None:
        for tp in consumer.assignment():
            consumer.seek(tp, 0)
        consumer.poll(500, 0.0)

    keys = [f[1] for f in scanned if f is not None]

    def inbox_batch() -> None:
        fresh = MemoryInbox()
        fresh.seen("c", keys)
        fresh.begin()
        fresh.add("c", keys, 1)
        fresh.enqueue("o", outbox)
        fresh.commit()
        fresh.begin()
        fresh.mark_sent([r[0] for r in outbox])
        fresh.commit()

    parts: dict[str, Any] = {
        "poll (memory, build Records)": poll_all,
        "envelope scan + batch trace check": lambda: (
            [scan_headers(r.headers) for r in batch],
            all_valid([f[3] for f in scanned if f is not None]),
        ),
        "serde decode": lambda: [serde.decode("bench.shop.ItemPlaced", v) for v in values],
        "handler (builds ItemReserved)": lambda: [handler(e) for e in events],
        "serde encode": lambda: [serde.encode(e) for e in emitted],
        "emit incl. serde encode (id, headers, trace)": lambda: [
            encode_one(route, f, e) for f, e in pairs
        ],
        "inbox (seen, add, outbox in and out)": inbox_batch,
        "publish (memory)": lambda: publish_many(outbox),  # as the worker's delivery does
        "whole dispatch (hot)": lambda: worker.dispatcher.dispatch(batch),
    }
    timings = {}
    for name, part in parts.items():
        best = min(timeit.repeat(part, number=20, repeat=7, timer=time.process_time))
        timings[name] = round(best / 20 / len(batch) * 1e6, 2)
    worker.close()
    emit = timings["emit incl. serde encode (id, headers, trace)"] - timings["serde encode"]
    timings["= emit excl. serde encode"] = round(emit, 2)
    return timings


def spread(values: list[float], digits: int = 3) -> dict[str, Any]:
    """Return the median of ``values`` with their range and every value, rounded."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def one_round(count: int, configs: tuple[str, ...], *, profile: bool = False) -> dict[str, float]:
    """Run ``configs`` once each on ``count`` fresh events; return their CPU seconds."""
    seconds: dict[str, float] = {}
    gc.unfreeze()
    bus = MemoryBus()
    fill(bus, count)
    shared = {
        "raw": lambda: run_raw(bus),
        "serde": lambda: run_serde(bus),
        "hop": lambda: run_hop(bus),
        # The worker's first batch (500 records) is a warm-up outside the timing.
        "memory": lambda: run_worker(bus, MemoryInbox(), profile=profile),
        "no_publish": lambda: run_worker(bus, MemoryInbox(), publish=False),
    }
    for name in configs:
        if name in shared:
            seconds[name] = shared[name]()
    for name in configs:
        if name in shared:
            continue
        gc.unfreeze()
        fresh = MemoryBus()
        fill(fresh, count)
        if name == "gc_off":
            seconds[name] = run_worker(fresh, MemoryInbox(), collect=False)
        elif name == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                inbox = SqliteInbox(Path(tmp) / "inbox.db")
                seconds[name] = run_worker(fresh, inbox)
                inbox.close()
    return seconds


CONFIGS = ("raw", "serde", "hop", "memory", "no_publish", "gc_off", "sqlite")
AB_CONFIGS = ("raw", "hop", "memory")
WORKER_CONFIGS = frozenset({"memory", "no_publish", "gc_off", "sqlite"})


def rates_of(count: int, results: dict[str, list[float]]) -> dict[str, list[float]]:
    """Return events/s from CPU seconds (the worker's warm-up batch is not timed)."""
    return {
        name: [(count - 500 if name in WORKER_CONFIGS else count) / t for t in times]
        for name, times in results.items()
    }


def ratio(rates: dict[str, list[float]], name: str, base: str) -> dict[str, Any]:
    """Return the spread of ``name``'s rate over ``base``'s, each taken within one round."""
    return spread([r / b for r, b in zip(rates[name], rates[base], strict=True)])


def measure(count: int, repeat: int, *, profile: bool = False) -> dict[str, Any]:
    """Run every configuration interleaved in ``repeat`` rounds; return the report."""
    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(repeat):
        for name, seconds in one_round(count, CONFIGS, profile=profile).items():
            results[name].append(seconds)
        if profile:
            break
    rates = rates_of(count, results)
    vs_raw = ratio(rates, "memory", "raw")
    return {
        "benchmark": "runtime",
        "events": count,
        "repeats": len(results["raw"]),
        "method": (
            "configurations interleaved within each repeat; every figure is the median "
            "over the repeats with [min, max]; a ratio is taken within one repeat, then "
            "summarised"
        ),
        "events_per_second": {k: spread(v, 0) for k, v in rates.items()},
        "microseconds_per_event": {k: spread([1e6 / r for r in v], 2) for k, v in rates.items()},
        "runtime_memory_vs_raw": vs_raw,
        "runtime_memory_vs_hop": ratio(rates, "memory", "hop"),
        "runtime_sqlite_vs_raw": ratio(rates, "sqlite", "raw"),
        "targets": {"events_per_second": 50_000, "vs_raw": 0.5},
        "met": statistics.median(rates["memory"]) >= 50_000 and vs_raw["median"] >= 0.5,
        "clock": "process CPU time (time.process_time), input frozen out of the GC",
        "components_hot_us": components(),
        "notes": (
            "raw excludes any transport; hop is the lean hand-written loop on the same "
            "transport; memory - no_publish is the memory transport's publish and storage; "
            "memory - gc_off is what garbage collections cost; components_hot_us are the "
            "parts timed alone on one hot 500-record batch (the full runs add cold-memory "
            "and collection costs)"
        ),
        **versions(),
    }


def versions() -> dict[str, str]:
    """Return the interpreter, machine and fastavro versions of this run."""
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "fastavro": fastavro.__version__,
    }


def export_ref(ref: str, into: Path) -> str:
    """Write the ``choreo`` package of git revision ``ref`` under ``into``; return its hash."""
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", commit, "choreo"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return commit


def child_round(package_root: Path, count: int) -> dict[str, float]:
    """Run one A/B round in a fresh interpreter importing choreo from ``package_root``."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    out = subprocess.run(
        [sys.executable, __file__, "--round", "--events", str(count)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    seconds: dict[str, float] = json.loads(out)
    return seconds


def measure_ab(count: int, repeat: int, ref: str) -> dict[str, Any]:
    """Run this code and revision ``ref`` alternately, ``repeat`` rounds each; return the report.

    Each round runs raw, hop and the memory-inbox worker in its own interpreter (this
    checkout's choreo, or ``ref``'s exported to a temporary directory), so each side's
    ratios are taken against the raw loop of its own process; the side that goes first
    alternates between rounds.
    """
    here = Path(__file__).resolve().parent.parent
    sides: dict[str, dict[str, list[float]]] = {
        "before": {name: [] for name in AB_CONFIGS},
        "after": {name: [] for name in AB_CONFIGS},
    }
    with tempfile.TemporaryDirectory() as tmp:
        commit = export_ref(ref, Path(tmp))
        roots = {"before": Path(tmp), "after": here}
        for index in range(repeat):
            order = ("before", "after") if index % 2 == 0 else ("after", "before")
            for side in order:
                for name, seconds in child_round(roots[side], count).items():
                    sides[side][name].append(seconds)
    report: dict[str, Any] = {
        "benchmark": "runtime A/B: revision before against this checkout (after)",
        "events": count,
        "rounds_per_side": repeat,
        "before": {"ref": ref, "commit": commit},
        "method": (
            "each round runs raw, hop and the memory-inbox worker in a fresh interpreter "
            "importing one side's choreo; sides alternate (which goes first alternates "
            "too); a ratio against raw or hop is taken within one process, the after / "
            "before ratio within one round"
        ),
        "clock": "process CPU time (time.process_time), input frozen out of the GC",
    }
    rates = {side: rates_of(count, results) for side, results in sides.items()}
    for side in ("before", "after"):
        report[side] = {
            **report.get(side, {}),
            "microseconds_per_event": {
                k: spread([1e6 / r for r in v], 2) for k, v in rates[side].items()
            },
            "runtime_memory_vs_raw": ratio(rates[side], "memory", "raw"),
            "runtime_memory_vs_hop": ratio(rates[side], "memory", "hop"),
        }
    report["after_vs_before_memory_speed"] = spread(
        [a / b for a, b in zip(rates["after"]["memory"], rates["before"]["memory"], strict=True)]
    )
    report["rounds_after_memory_vs_raw_below_0_5"] = sum(
        1 for v in report["after"]["runtime_memory_vs_raw"]["runs"] if v < 0.5
    )
    report.update(versions())
    return report


def main() -> None:
    """Run the benchmark and print (and by default record) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--baseline-ref",
        help="A/B: run this git revision's choreo and this checkout alternately "
        "(--repeat rounds each); writes results/runtime-ab.json",
    )
    parser.add_argument("--round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.round:  # one A/B round in this interpreter (see measure_ab)
        print(json.dumps(one_round(args.events, AB_CONFIGS)))
        return
    if args.baseline_ref:
        report = measure_ab(args.events, args.repeat, args.baseline_ref)
        target = AB_RESULTS
    else:
        report = measure(args.events, args.repeat, profile=args.profile)
        target = RESULTS
    print(json.dumps(report, indent=2))
    if not args.no_write and not args.profile:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
