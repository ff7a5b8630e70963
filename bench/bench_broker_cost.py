"""Broker CPU per saga under variants of choreo's client defaults and topic layout.

    python bench/bench_broker_cost.py                 # own broker, every variant, 3 repeats
    python bench/bench_broker_cost.py --sagas 300 --repeat 1 --only before,defaults \
        --throughput '' --no-write

The order saga of the peers benchmark (four choreo services on confluent-kafka, each
its own process, :mod:`bench.saga_service`) on a real single-node Kafka broker with 6
partitions per topic. Every run gets fresh topics and consumer groups; a warm-up of 40
sagas must end before the clock starts. Two phases, one broker:

- **open loop** (every variant): ``--sagas`` start events produced at a fixed ``--rate``
  per second, so latency is a saga's own and not queueing behind the others;
- **throughput** (``--throughput`` variants): ``--throughput-sagas`` start events at once,
  as the peers benchmark measures (latency then includes queueing).

Measured over the timed phase (first start event to the last terminal event consumed):

- **broker CPU per saga**: the broker JVM's user + system CPU (``/proc/<pid>/stat``,
  :mod:`bench.proc_cpu`) / sagas: everything the broker did meanwhile, the harness's own
  injector and collector included (the same in every variant);
- **service CPU per saga**: the four service processes' CPU / sagas;
- **requests per saga**: the requests the services' clients sent, per API (Produce,
  Fetch, OffsetCommit, Heartbeat...), from librdkafka's statistics (reported every
  200 ms, so the counts are approximate by a fraction of a second's worth);
- **records per request**: the records the services' producers sent per Produce request
  and their consumers received per Fetch (librdkafka's ``txmsgs``/``rxmsgs``): what
  batching achieved;
- **latency** p50/p99: terminal event consumed - start event produced.

Last, a **produce probe** (``--probe-flushes``): choreo's confluent and kafka-python
producers publish and flush 1 record, 6 records to one partition and 6 records to 6
partitions, many times each; per flush it records the Produce requests (librdkafka) and
the broker's CPU: whether a worker's one flush per batch is one request or one per
partition.

A variant is a set of overrides of the library's defaults (``VARIANTS``): ``before`` pins
the defaults this benchmark started from, one-setting variants change one thing on top
of it, ``defaults`` is the library as it is now. Variants are interleaved (repeat 1 of
every variant, then repeat 2 rotated by one, ...) after an unrecorded warm-up run (the
broker JVM's JIT), and summarised as min/median/max over the repeats with ratios of the
medians against ``before``. Each run also checks correctness: every saga ended once, with
the terminal event its id decides, and every service's final state counts are the
expected ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers import choreography as ch
from bench.proc_cpu import CpuMeter
from bench.saga_service import (
    RECORDS_FETCHED,
    RECORDS_PRODUCED,
    RequestStats,
    read_request_stats,
)
from bench.sagaload import (
    SERVICES,
    BrokerOption,
    Collector,
    Injector,
    Services,
    check_outcomes,
    create_topics,
    delete_topics,
    latencies_ms,
    machine,
    new_layout,
    percentile,
    spread,
)
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport
from choreo.transports.partitioner import partition_for

RESULTS: Final = Path(__file__).resolve().parent / "results"
WARMUP: Final = 40

Variant = Mapping[str, Any]


def _on(base: Variant, **changes: Any) -> dict[str, Any]:
    """Return ``base`` with ``changes`` merged in (client and worker settings per key)."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in changes.items():
        if isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


BEFORE: Final[Variant] = {"worker": {"commit_interval": 0.0}}
"""choreo's defaults before this benchmark (offsets committed after every batch)."""

VARIANTS: Final[dict[str, Variant]] = {
    "before": BEFORE,
    "defaults": {},
    "linger-0": _on(BEFORE, producer={"linger.ms": 0}),
    "linger-50": _on(BEFORE, producer={"linger.ms": 50}),
    "batch-16k": _on(BEFORE, producer={"batch.size": 16384}),
    "fetch-min-16k-wait-10": _on(BEFORE, consumer={"fetch.min.bytes": 16384,
                                                   "fetch.wait.max.ms": 10}),
    "lz4": _on(BEFORE, producer={"compression.type": "lz4"}),
    "zstd": _on(BEFORE, producer={"compression.type": "zstd"}),
    "commit-100ms": _on(BEFORE, worker={"commit_interval": 0.1}),
    "layout-namespace": _on(BEFORE, layout="namespace"),
    "layout-saga": _on(BEFORE, layout="saga"),
    "defaults+namespace": {"layout": "namespace"},
    # a steady rate: the broker holds each fetch until fetch.wait.max.ms (64 KiB never
    # arrive at 100 sagas/s), so a fetch returns every N ms with what came meanwhile
    "fetch-wait-10": {"consumer": {"fetch.min.bytes": 65536, "fetch.wait.max.ms": 10}},
    "fetch-wait-20": {"consumer": {"fetch.min.bytes": 65536, "fetch.wait.max.ms": 20}},
    "fetch-wait-50": {"consumer": {"fetch.min.bytes": 65536, "fetch.wait.max.ms": 50}},
    # ... or until about two records are there (the adaptive variant: at a high rate the
    # minimum is reached at once, at a low one the wait bounds the delay)
    "fetch-2rec-wait-20": {"consumer": {"fetch.min.bytes": 1200, "fetch.wait.max.ms": 20}},
    # kafka-python sends one Produce request per broker for all partitions of a flush,
    # librdkafka one per partition
    "kafka-python": {"transport": "kafka-python"},
    "kafka-python+fetch-wait-50": {"transport": "kafka-python",
                                   "consumer": {"fetch.min.bytes": 65536,
                                                "fetch.wait.max.ms": 50}},
}
"""Each variant: overrides of the library's defaults (producer/consumer settings,
WorkerConfig fields, topic layout). ``before`` pins the defaults this benchmark started
from; the single-setting variants change one thing on top of it; ``defaults`` is the
library's defaults as they are now (the code under test); ``transport`` picks the Kafka
client of the services (confluent by default; kafka-python reports no request counts)."""

def _service_args(bootstrap: str, service: str, prefix: str, variant: Variant,
                  partitions: int) -> list[str]:
    return [
        "--bootstrap", bootstrap, "--service", service, "--prefix", prefix,
        "--layout", variant.get("layout", "event-type"), "--partitions", str(partitions),
        "--producer", json.dumps(variant.get("producer", {})),
        "--consumer", json.dumps(variant.get("consumer", {})),
        "--worker", json.dumps(variant.get("worker", {})),
        "--transport", variant.get("transport", "confluent"),
    ]


def _diff(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {api: n - before.get(api, 0) for api, n in after.items() if n - before.get(api, 0)}


def _per_request(records: int, requests: int) -> float | None:
    return round(records / requests, 3) if records and requests else None


def run_once(bootstrap: str, broker_pid: int, name: str, variant: Variant, *,
             sagas: int, rate: float, partitions: int, workdir: Path) -> dict[str, Any]:
    """Run the saga once under ``variant``; return its measurements."""
    layout = new_layout(variant.get("layout", "event-type"))
    topics = layout.topics()
    create_topics(bootstrap, topics, partitions)
    collector = Collector(bootstrap, {layout.topic(t) for t in ch.TERMINAL})
    collector.start()
    services = Services()
    tag = uuid.uuid4().hex[:6]
    try:
        for service in SERVICES:
            services.start(service, _service_args(bootstrap, service, layout.prefix, variant,
                                                  partitions),
                           state_file=workdir / f"{layout.prefix}{service}.json",
                           stats_file=workdir / f"{layout.prefix}{service}.stats.json")
        injector = Injector(bootstrap, layout.topic(ch.ORDER_CREATED))
        warm = [f"w{tag}-{i}" for i in range(WARMUP)]
        for order_id, payload, headers in injector.prepare(warm):
            injector.send(order_id, payload, headers)
        injector.flush()
        if not collector.wait_for(warm, 120):
            services.check_alive()
            raise RuntimeError(f"{name}: warm-up did not finish")
        ids = [f"o{tag}-{i}" for i in range(sagas)]
        prepared = injector.prepare(ids)
        meters = {"broker": CpuMeter(broker_pid)}
        meters.update({s: CpuMeter(pid) for s, pid in services.pids().items()})
        starts: dict[str, float] = {}
        requests_before = read_request_stats(services.stats_files)
        for meter in meters.values():
            meter.start()
        begin = time.monotonic()
        if rate > 0:
            injector.paced(prepared, rate, starts, services.check_alive)
        else:
            for order_id, payload, headers in prepared:
                starts[order_id] = injector.send(order_id, payload, headers)
            injector.flush()
        ended = collector.wait_for(ids, 300)
        wall = time.monotonic() - begin
        cpu = {who: meter.stop() for who, meter in meters.items()}
        time.sleep(3 * RequestStats.INTERVAL_MS / 1000)  # the last reports of the phase
        requests = _diff(read_request_stats(services.stats_files), requests_before)
        produced = requests.pop(RECORDS_PRODUCED, 0)
        fetched = requests.pop(RECORDS_FETCHED, 0)
    finally:
        services.stop()
        collector.stop()
        delete_topics(bootstrap, topics)
    lat = latencies_ms(starts, collector.ends)
    expected_states = ch.expected_state_counts([*warm, *ids])
    states = services.states()
    wrong = check_outcomes(ids, collector.outcomes)
    service_cpu = sum(cpu[s] for s in SERVICES)
    return {
        "variant": name,
        "settings": dict(variant),
        "sagas": sagas,
        "rate": rate,
        "partitions": partitions,
        "topics": len(topics),
        "wall_s": round(wall, 3),
        "sagas_per_s": round(sagas / wall, 1),
        "broker_cpu_s": round(cpu["broker"], 3),
        "broker_ms_per_saga": round(cpu["broker"] * 1000 / sagas, 4),
        "service_ms_per_saga": round(service_cpu * 1000 / sagas, 4),
        "service_ms_per_saga_each": {s: round(cpu[s] * 1000 / sagas, 4) for s in SERVICES},
        "requests_per_saga": {api: round(n / sagas, 3) for api, n in sorted(requests.items())},
        "requests_per_saga_total": round(sum(requests.values()) / sagas, 3),
        "records_per_produce": _per_request(produced, requests.get("Produce", 0)),
        "records_per_fetch": _per_request(fetched, requests.get("Fetch", 0)),
        "p50_ms": round(percentile(lat, 50), 2),
        "p95_ms": round(percentile(lat, 95), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "ended": len(lat),
        "duplicate_terminals": collector.duplicates,
        "wrong_outcomes": len(wrong),
        "states_ok": states == expected_states,
        "ok": ended and not wrong and collector.duplicates == 0 and states == expected_states,
    }


def idle_broker_cpu(pid: int, seconds: float = 5.0) -> float:
    """Return the broker's CPU seconds per second with no client connected."""
    meter = CpuMeter(pid)
    meter.start()
    time.sleep(seconds)
    return meter.stop() / seconds


PROBE_SHAPES: Final = (("1 record", 1, 1), ("6 records, 1 partition", 6, 1),
                      ("6 records, 6 partitions", 6, 6))
"""The produce probe's flushes: (label, records per flush, partitions they go to)."""


def _keys_for(partitions: int) -> list[bytes]:
    """Return one key per partition 0..partitions-1 under Kafka's default partitioner."""
    keys: dict[int, bytes] = {}
    index = 0
    while len(keys) < partitions:
        key = f"k{index}".encode()
        keys.setdefault(partition_for(key, partitions), key)
        index += 1
    return [keys[p] for p in range(partitions)]


def produce_probe(bootstrap: str, broker_pid: int, workdir: Path, *, flushes: int = 2000,
                  partitions: int = 6, idle_cpu_per_s: float = 0.0) -> list[dict[str, Any]]:
    """Return per transport and flush shape the Produce requests and broker CPU per flush.

    Through choreo's producers (``publish`` then ``flush``, as a worker's batch): one
    record per flush, 6 records to one partition, 6 records to 6 partitions. librdkafka
    reports its requests; kafka-python does not (its broker CPU per flush still shows
    whether the 6 partitions cost 6 requests). ``broker_ms_per_flush_above_idle``
    subtracts what the idle broker spends meanwhile (``idle_cpu_per_s``, CPU s per s):
    kafka-python's slower flushes would otherwise carry more idle CPU.
    """
    topic = f"bc-probe-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic], partitions)
    keys, value = _keys_for(partitions), b"x" * 400
    rows: list[dict[str, Any]] = []
    try:
        for kind in ("confluent", "kafka-python"):
            path = workdir / f"probe-{kind}.stats.json"
            settings = RequestStats(path).settings() if kind == "confluent" else {}
            producer = open_transport(
                kind, config=KafkaConfig(bootstrap_servers=bootstrap, producer=settings)
            ).producer()
            try:
                for _ in range(20):  # connection, producer id, JIT
                    producer.publish(topic, value, key=keys[0])
                    producer.flush(30)
                for label, records, spread_over in PROBE_SHAPES:
                    time.sleep(3 * RequestStats.INTERVAL_MS / 1000)
                    producer.flush(1)  # serves the statistics callback
                    before = read_request_stats([path])
                    meter = CpuMeter(broker_pid)
                    meter.start()
                    begin = time.monotonic()
                    for _ in range(flushes):
                        for index in range(records):
                            producer.publish(topic, value, key=keys[index % spread_over])
                        producer.flush(30)
                    wall, cpu = time.monotonic() - begin, meter.stop()
                    time.sleep(3 * RequestStats.INTERVAL_MS / 1000)
                    producer.flush(1)
                    sent = _diff(read_request_stats([path]), before).get("Produce", 0)
                    rows.append({
                        "transport": kind, "shape": label, "records": records,
                        "partitions": spread_over,
                        "produce_requests_per_flush": round(sent / flushes, 2) if sent else None,
                        "broker_ms_per_flush": round(cpu * 1000 / flushes, 3),
                        "broker_ms_per_flush_above_idle": round(
                            (cpu - idle_cpu_per_s * wall) * 1000 / flushes, 3),
                        "flush_ms": round(wall * 1000 / flushes, 3),
                    })
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                producer.close()
    finally:
        delete_topics(bootstrap, [topic])
    return rows


METRICS: Final = ("broker_ms_per_saga", "service_ms_per_saga", "p50_ms", "p99_ms",
                  "requests_per_saga_total")


def summarize(rows: list[dict[str, Any]], baseline: str = "before") -> list[dict[str, Any]]:
    """Return per variant the spread of each metric and the ratio of medians to ``baseline``."""
    names = list(dict.fromkeys(r["variant"] for r in rows))
    spreads = {
        n: {m: spread([r[m] for r in rows if r["variant"] == n]) for m in METRICS}
        for n in names
    }
    base = spreads.get(baseline)
    summary = []
    for n in names:
        entry: dict[str, Any] = {"variant": n, **spreads[n]}
        entry["all_ok"] = all(r["ok"] for r in rows if r["variant"] == n)
        entry["counts"] = _count_medians([r for r in rows if r["variant"] == n])
        if base is not None:
            entry["ratio"] = {
                m: round(spreads[n][m]["median"] / base[m]["median"], 3) for m in METRICS
            }
        summary.append(entry)
    return summary


def _count_medians(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Return the medians of Fetch and Produce requests per saga and of records per request.

    None where the clients reported no counts (kafka-python).
    """
    def median(values: list[float]) -> float | None:
        return round(percentile(sorted(values), 50), 3) if values else None

    return {
        "fetch_per_saga": median([r["requests_per_saga"]["Fetch"] for r in rows
                                  if "Fetch" in r["requests_per_saga"]]),
        "produce_per_saga": median([r["requests_per_saga"]["Produce"] for r in rows
                                    if "Produce" in r["requests_per_saga"]]),
        "records_per_fetch": median([r["records_per_fetch"] for r in rows
                                     if r.get("records_per_fetch")]),
        "records_per_produce": median([r["records_per_produce"] for r in rows
                                       if r.get("records_per_produce")]),
    }


def _count(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(summary: list[dict[str, Any]]) -> str:
    """Return the summary as a Markdown table."""
    lines = [
        "| variant | broker ms/saga (min-max) | x base | service ms/saga | x base "
        "| p50 ms | p99 ms (min-max) | p99 x base | requests/saga | Fetch/saga | Produce/saga "
        "| records/Fetch | records/Produce | ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in summary:
        b, s, p50, p99, req = (e[m] for m in METRICS)
        r = e.get("ratio", {})
        c = e.get("counts", {})
        lines.append(
            f"| {e['variant']} | {b['median']:.3f} ({b['min']:.3f}-{b['max']:.3f}) "
            f"| {r.get('broker_ms_per_saga', float('nan')):.2f} | {s['median']:.3f} "
            f"| {r.get('service_ms_per_saga', float('nan')):.2f} | {p50['median']:.1f} "
            f"| {p99['median']:.1f} ({p99['min']:.1f}-{p99['max']:.1f}) "
            f"| {r.get('p99_ms', float('nan')):.2f} "
            f"| {_count(req['median'] or None, 1)} | {_count(c.get('fetch_per_saga'))} "
            f"| {_count(c.get('produce_per_saga'))} | {_count(c.get('records_per_fetch'))} "
            f"| {_count(c.get('records_per_produce'))} | {'yes' if e['all_ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def _run_phase(broker: BrokerOption, names: list[str], *, sagas: int, rate: float,
               repeat: int, partitions: int, workdir: Path) -> list[dict[str, Any]]:
    """Run ``names`` interleaved ``repeat`` times (rotated); return the rows."""
    rows: list[dict[str, Any]] = []
    for index in range(1, repeat + 1):
        shift = (index - 1) % len(names)  # rotate: no variant always runs first
        for name in names[shift:] + names[:shift]:
            row = run_once(broker.bootstrap, broker.pid, name, VARIANTS[name], sagas=sagas,
                           rate=rate, partitions=partitions, workdir=workdir)
            row["repeat"] = index
            rows.append(row)
            print(json.dumps({k: row[k] for k in (
                "variant", "rate", "repeat", "broker_ms_per_saga", "service_ms_per_saga",
                "p50_ms", "p99_ms", "requests_per_saga_total", "sagas_per_s", "ok")}), flush=True)
    return rows


def _names(parser: argparse.ArgumentParser, text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the variants (open loop, then the throughput phase) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="sagas/s of the open-loop phase")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants of the open loop")
    parser.add_argument("--throughput", default="before,defaults",
                        help="variants also run with every saga started at once ('' for none)")
    parser.add_argument("--throughput-sagas", type=int, default=3000)
    parser.add_argument("--bootstrap", default=None, help="an existing broker (needs --broker-pid)")
    parser.add_argument("--broker-pid", type=int, default=None)
    parser.add_argument("--warmup-sagas", type=int, default=2000,
                        help="an unrecorded run first (the broker JVM's JIT warm-up)")
    parser.add_argument("--probe-flushes", type=int, default=2000,
                        help="flushes per shape of the produce probe (0: no probe)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    names, burst = _names(parser, args.only), _names(parser, args.throughput)
    broker = BrokerOption(args.bootstrap, args.broker_pid)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[dict[str, Any]] = []
    burst_rows: list[dict[str, Any]] = []
    probe: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            idle = idle_broker_cpu(broker.pid)
            if args.warmup_sagas:
                run_once(broker.bootstrap, broker.pid, "warm-up", VARIANTS["before"],
                         sagas=args.warmup_sagas, rate=args.rate, partitions=args.partitions,
                         workdir=Path(tmp))
            rows = _run_phase(broker, names, sagas=args.sagas, rate=args.rate,
                              repeat=args.repeat, partitions=args.partitions, workdir=Path(tmp))
            if burst:
                burst_rows = _run_phase(broker, burst, sagas=args.throughput_sagas, rate=0,
                                        repeat=args.repeat, partitions=args.partitions,
                                        workdir=Path(tmp))
            if args.probe_flushes:
                probe = produce_probe(broker.bootstrap, broker.pid, Path(tmp),
                                      flushes=args.probe_flushes, partitions=args.partitions,
                                      idle_cpu_per_s=idle)
    finally:
        broker.stop()
    summary, burst_summary = summarize(rows), summarize(burst_rows) if burst_rows else []
    result = {
        "benchmark": "broker_cost",
        "started": started,
        "machine": {**machine(), "kafka": broker.kafka_version},
        "process_per_service": True,
        "partitions": args.partitions,
        "repeat": args.repeat,
        "broker_idle_cpu_ms_per_s": round(idle * 1000, 2),
        "open_loop": {"sagas": args.sagas, "rate": args.rate, "summary": summary},
        "throughput": {"sagas": args.throughput_sagas, "summary": burst_summary},
        "produce_probe": probe,
        "variants": {n: dict(VARIANTS[n]) for n in dict.fromkeys([*names, *burst])},
        "defaults": _defaults(),
        "runs": rows + burst_rows,
    }
    print(f"open loop, {args.rate:g} sagas/s:\n{table(summary)}")
    if burst_summary:
        print(f"throughput ({args.throughput_sagas} sagas at once):\n{table(burst_summary)}")
    if not args.no_write:
        out = args.out or RESULTS / f"broker-cost-{started.replace('-', '').replace(':', '')}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if all(r["ok"] for r in rows + burst_rows) else 1


def _defaults() -> dict[str, Any]:
    """Return choreo's client and worker defaults of the code under test."""
    from choreo.runtime import WorkerConfig
    from choreo.transports.config import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS

    return {"producer": dict(PRODUCER_DEFAULTS), "consumer": dict(CONSUMER_DEFAULTS),
            "commit_interval": WorkerConfig().commit_interval}


if __name__ == "__main__":
    raise SystemExit(main())
