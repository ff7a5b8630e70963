"""Per-hop latency with one saga in flight: choreo vs the hand-written ceiling vs FastStream.

    python bench/bench_pingpong.py                      # own broker, 3 interleaved repeats
    python bench/bench_pingpong.py --hops 100 --repeat 1 --no-write

One hop is one step of the saga: the inventory service (its own process) consumes an
``OrderCreated``, runs ``reserve`` and produces ``InventoryReserved`` (or
``InventoryReservationFailed``). The harness produces one start event, waits until the
collector has consumed the reply, then sends the next (one saga in flight, no queueing),
so each sample is one round trip harness → service → harness: two Kafka traversals and
one handler, on a real single-node broker, 6 partitions per topic. Implementations
(each its own process, the same harness, codec and headers):

- ``choreo``: :mod:`bench.saga_service` (a choreo Worker with its default settings);
- ``ceiling``: the same step in a hand-written confluent-kafka loop with choreo's codec,
  client settings and commit semantics (:mod:`bench.pingpong_peers`);
- ``faststream``: the same step as a FastStream subscriber (:mod:`bench.pingpong_peers`).

Reported per implementation: p50/p99/max of the round trip over ``--hops`` samples per
repeat (min/median/max over repeats), the service process's CPU per hop, and ratios of
the medians against ``ceiling``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers import choreography as ch
from bench.proc_cpu import CpuMeter
from bench.sagaload import (
    BrokerOption,
    Collector,
    Injector,
    Services,
    create_topics,
    delete_topics,
    machine,
    new_layout,
    percentile,
    spread,
)

RESULTS: Final = Path(__file__).resolve().parent / "results"
IMPLEMENTATIONS: Final = ("choreo", "ceiling", "faststream")
REPLIES: Final = (ch.INVENTORY_RESERVED, ch.RESERVATION_FAILED)
WARMUP: Final = 30


def _start(services: Services, impl: str, bootstrap: str, prefix: str, partitions: int) -> None:
    group = f"{prefix}inventory"
    if impl == "choreo":
        services.start(impl, ["--bootstrap", bootstrap, "--service", "inventory",
                              "--prefix", prefix, "--partitions", str(partitions),
                              "--group", group])
    else:
        services.start(impl, [impl, "--bootstrap", bootstrap, "--prefix", prefix,
                              "--group", group], module="bench.pingpong_peers")


def run_once(bootstrap: str, impl: str, *, hops: int, partitions: int) -> dict[str, Any]:
    """Run ``hops`` round trips through ``impl``; return the samples' summary."""
    layout = new_layout("event-type")
    topics = layout.topics()
    create_topics(bootstrap, topics, partitions)
    collector = Collector(bootstrap, [layout.topic(t) for t in REPLIES], types=REPLIES)
    collector.start()
    services = Services()
    tag = uuid.uuid4().hex[:6]
    samples: list[float] = []
    try:
        _start(services, impl, bootstrap, layout.prefix, partitions)
        injector = Injector(bootstrap, layout.topic(ch.ORDER_CREATED))
        ids = [f"p{tag}-{i}" for i in range(WARMUP + hops)]
        prepared = injector.prepare(ids)
        meter = CpuMeter(services.pids()[impl])
        for index, (order_id, payload, headers) in enumerate(prepared):
            if index == WARMUP:
                meter.start()
            sent = injector.send(order_id, payload, headers)
            if not collector.wait_for([order_id], 120 if index == 0 else 30):
                services.check_alive()
                raise RuntimeError(f"{impl}: no reply to {order_id}")
            if index >= WARMUP:
                samples.append((collector.ends[order_id] - sent) * 1000)
        cpu = meter.stop()
    finally:
        services.stop()
        collector.stop()
        delete_topics(bootstrap, topics)
    return {
        "implementation": impl,
        "hops": hops,
        "partitions": partitions,
        "p50_ms": round(percentile(samples, 50), 3),
        "p90_ms": round(percentile(samples, 90), 3),
        "p99_ms": round(percentile(samples, 99), 3),
        "max_ms": round(max(samples), 3),
        "mean_ms": round(sum(samples) / len(samples), 3),
        "service_cpu_ms_per_hop": round(cpu * 1000 / hops, 4),
        "duplicates": collector.duplicates,
        "ok": collector.duplicates == 0 and len(samples) == hops,
    }


METRICS: Final = ("p50_ms", "p99_ms", "max_ms", "service_cpu_ms_per_hop")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return per implementation the spread of each metric and ratios against ``ceiling``."""
    spreads = {
        impl: {m: spread([r[m] for r in rows if r["implementation"] == impl]) for m in METRICS}
        for impl in dict.fromkeys(r["implementation"] for r in rows)
    }
    base = spreads.get("ceiling")
    out = []
    for impl, metrics in spreads.items():
        entry: dict[str, Any] = {"implementation": impl, **metrics}
        if base is not None:
            entry["x_ceiling"] = {m: round(metrics[m]["median"] / base[m]["median"], 3)
                                  for m in METRICS}
        out.append(entry)
    return out


def table(summary: list[dict[str, Any]]) -> str:
    """Return the summary as a Markdown table."""
    lines = ["| implementation | p50 ms (min-max) | x ceiling | p99 ms (min-max) | x ceiling "
             "| max ms | service CPU ms/hop | x ceiling |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in summary:
        p50, p99, mx, cpu = (e[m] for m in METRICS)
        x = e.get("x_ceiling", {})
        lines.append(
            f"| {e['implementation']} | {p50['median']:.2f} ({p50['min']:.2f}-{p50['max']:.2f}) "
            f"| {x.get('p50_ms', float('nan')):.2f} "
            f"| {p99['median']:.2f} ({p99['min']:.2f}-{p99['max']:.2f}) "
            f"| {x.get('p99_ms', float('nan')):.2f} | {mx['median']:.1f} "
            f"| {cpu['median']:.3f} | {x.get('service_cpu_ms_per_hop', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the implementations interleaved and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hops", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--broker-pid", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    impls = [i for i in args.only.split(",") if i]
    if any(i not in IMPLEMENTATIONS for i in impls):
        parser.error(f"--only: some of {', '.join(IMPLEMENTATIONS)}")
    broker = BrokerOption(args.bootstrap, args.broker_pid)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[dict[str, Any]] = []
    try:
        for repeat in range(1, args.repeat + 1):
            shift = (repeat - 1) % len(impls)
            for impl in impls[shift:] + impls[:shift]:
                row = run_once(broker.bootstrap, impl, hops=args.hops, partitions=args.partitions)
                row["repeat"] = repeat
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        broker.stop()
    summary = summarize(rows)
    from importlib.metadata import version

    result = {
        "benchmark": "pingpong",
        "started": started,
        "machine": {**machine(), "kafka": broker.kafka_version,
                    "faststream": version("faststream")},
        "process_per_service": True,
        "hops": args.hops,
        "partitions": args.partitions,
        "repeat": args.repeat,
        "summary": summary,
        "runs": rows,
    }
    print(table(summary))
    if not args.no_write:
        out = args.out or RESULTS / f"pingpong-{started.replace('-', '').replace(':', '')}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
