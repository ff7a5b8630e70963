"""Run one implementation of the saga once, each service in its own process, and measure it.

``python -m bench.peers.runner --impl ceiling --sagas 1000 --partitions 6 --replicas 1
--bootstrap HOST:PORT --broker-pid PID --recreate-topics --out result.json`` is what
:mod:`bench.run_peers` starts in a fresh subprocess per run.

How a run goes, the same for every implementation on Kafka:

1. the topics of the saga are recreated empty with the run's partition count;
2. every service starts in a process of its own (:mod:`bench.peers.service`; with
   ``--replicas N`` N processes per service, in one consumer group), as it would be
   deployed; the run waits until each prints ``ready`` and every consumer group is
   stable with all its members (:func:`bench.peers.topics.wait_for_groups`);
3. the harness's **collector** (a plain confluent-kafka consumer in a thread of this
   process) notes when each saga's terminal event arrives, and which one it is;
4. a warm-up of a few sagas must go through every service before timing starts;
5. the harness's **injector** (a plain confluent-kafka producer in this process)
   publishes all N start events as fast as it can, each saga's start time taken just
   before its ``produce``; the records (Avro single-object payload by choreo's codec,
   choreo envelope headers) are encoded before the clock starts;
6. the run ends when the collector has seen N terminal events or the budget is spent;
   then every service process is told to stop (its stdin is closed) and reports its state
   dict, which is checked against the states the order ids decide.

Throughput is N / (last terminal event - first start); latency is per saga, start to
terminal event (in this throughput mode it includes queueing behind earlier sagas). CPU is
read from /proc over the timed phase (:mod:`bench.proc_cpu`): the **service** CPU is the
sum over the service processes (the headline figure), the **harness** CPU (injector and
collector) is this process's, the **broker** CPU the Kafka JVM's (``--broker-pid``) and the
**PostgreSQL** CPU the server's processes (``--postgres-pid``). The machine's busy cores
over the timed phase (everything on it, other users included) are recorded too.

DBOS needs no Kafka and is one application process (it orchestrates the steps as function
calls): it runs in this process, its workflows are started by ``submit`` and report their
end (``RunContext.observe``) when the workflow's last step has returned; its service CPU
is this process's CPU, the starts included.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.peers import choreography as ch
from bench.peers.harness import (
    IMPLEMENTATIONS,
    WARMUP_TIMEOUT_S,
    Collector,
    Implementation,
    Injector,
    RunContext,
    RunSpec,
    Tracker,
    load,
    now_ms,
    percentile,
)
from bench.peers.procs import Fleet
from bench.peers.shape import SagaShape, expected_state_counts, merge_states
from bench.peers.topics import recreate_topics, wait_for_groups
from bench.proc_cpu import CpuMeter, machine_cpu_seconds

IDLE_S = 1.0
"""Seconds the idle services are metered after the warm-up, before the timed phase."""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class Meters:
    """CPU meters of the processes around the services: broker, PostgreSQL, this process."""

    def __init__(self, spec: RunSpec) -> None:
        self.broker = CpuMeter(spec.broker_pid) if spec.broker_pid else None
        self.postgres = CpuMeter(spec.postgres_pid, tree=True) if spec.postgres_pid else None
        self.figures: dict[str, float | None] = {}

    def start(self) -> None:
        """Read every counter now."""
        for meter in (self.broker, self.postgres):
            if meter is not None:
                meter.start()
        self._own, self._machine = time.process_time(), machine_cpu_seconds()

    def stop(self) -> None:
        """Note the CPU seconds each spent since :meth:`start`."""
        self.figures = {
            "harness": time.process_time() - self._own,
            "machine": machine_cpu_seconds() - self._machine,
            "broker": self.broker.stop() if self.broker is not None else None,
            "postgres": self.postgres.stop() if self.postgres is not None else None,
        }


def fleet_args(spec: RunSpec, run_tag: str) -> list[str]:
    """Return the arguments every service process of ``spec`` gets."""
    args = [
        "--impl", spec.impl, "--run-tag", run_tag, "--bootstrap", spec.bootstrap,
        "--partitions", str(spec.partitions), "--topic-prefix", spec.topic_prefix,
    ]  # fmt: skip
    if spec.postgres_url:
        args += ["--postgres-url", spec.postgres_url]
    if spec.client_stats:
        args.append("--client-stats")
    return args


def run(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` and return its measurements (see the module docs)."""
    impl = load(spec.impl)
    shape = impl.shape
    ctx = RunContext(spec)
    result: dict[str, Any] = {
        "impl": spec.impl,
        "sagas": spec.sagas,
        "partitions": spec.partitions,
        "replicas": spec.replicas,
    }
    tracker = Tracker()
    meters = Meters(spec)
    if not impl.uses_kafka:
        return _run_in_process(
            spec, impl=impl, ctx=ctx, tracker=tracker, meters=meters, result=result
        )
    if spec.recreate_topics:
        topics = [ctx.topic(t) for t in shape.event_types]
        recreate_topics(spec.bootstrap, topics, spec.partitions)
    collector = Collector(ctx, tracker)
    collector.start()
    injector = Injector(ctx, shape)
    members = [
        (s, r) for s in shape.services for r in range(1 if s in shape.single else spec.replicas)
    ]
    started = time.monotonic()
    fleet = Fleet(fleet_args(spec, ctx.run_tag), members)
    order_ids: list[str] = []
    reports: list[dict[str, Any]] = []

    def failed() -> BaseException | None:
        fleet.check_alive()
        return collector.error

    try:
        fleet.wait_ready()
        groups = {ctx.group(s): sum(1 for m, _ in members if m == s) for s in shape.services}
        result["group_join_s"] = round(
            wait_for_groups(spec.bootstrap, groups, fleet.check_alive), 2
        )
        order_ids = _timed(
            spec,
            shape=shape,
            tracker=tracker,
            injector=injector,
            failed=failed,
            started=started,
            meters=meters,
            result=result,
            fleet=fleet,
        )
    finally:
        reports = fleet.stop()
        fleet.kill()
        collector.stop()
        if collector.error is not None:
            result["collector_error"] = repr(collector.error)
    cleanup = getattr(impl, "cleanup", None)
    if callable(cleanup):
        cleanup(ctx)
    errors = [
        f"{r.get('service')}-{r.get('replica')}: {r['error']}" for r in reports if r.get("error")
    ]
    if errors:
        result["service_errors"] = errors
    states = merge_states([r.get("states", {}) for r in reports])
    result["state_check"] = _check_states(shape, states, order_ids)
    by_service: dict[str, float] = {}
    for member in fleet.members:
        by_service[member.service] = by_service.get(member.service, 0.0) + (member.cpu_s or 0.0)
    ended = max(1, result.get("ended", 0))
    result["service_cpu_ms_per_saga_by_service"] = {
        s: round(cpu * 1000.0 / ended, 4) for s, cpu in by_service.items()
    }
    result["service_cpu_s"] = round(sum(by_service.values()), 3)
    result["cpu_ms_per_saga"] = round(sum(by_service.values()) * 1000.0 / ended, 4)
    _thread_split(result, fleet, reports, ended)
    result["processes"] = len(fleet.members)
    result["peak_rss_mb"] = round(sum(m.peak_rss_mb or 0.0 for m in fleet.members), 1)
    result["harness_peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _thread_split(
    result: dict[str, Any], fleet: Fleet, reports: list[dict[str, Any]], ended: int
) -> None:
    """Add the services' CPU split by thread kind and, if collected, their client counts."""
    rdk = [m.rdk_cpu_s for m in fleet.members]
    if all(r is not None for r in rdk):
        rdk_s = sum(r or 0.0 for r in rdk)
        total_s = sum(m.cpu_s or 0.0 for m in fleet.members)
        result["rdkafka_cpu_ms_per_saga"] = round(rdk_s * 1000.0 / ended, 4)
        result["python_cpu_ms_per_saga"] = round((total_s - rdk_s) * 1000.0 / ended, 4)
    threads = {
        f"{r.get('service')}-{r.get('replica')}": r["thread_cpu_ms"]
        for r in reports
        if r.get("thread_cpu_ms")
    }
    if threads:
        result["thread_cpu_ms"] = threads
    counts: dict[str, int] = {}
    for report in reports:
        for key, value in (report.get("client_stats") or {}).items():
            counts[key] = counts.get(key, 0) + value
    if counts:
        per_saga = {k: round(v / ended, 3) for k, v in sorted(counts.items())}
        batches = counts.get("batches", 0)
        per_saga["records_per_batch"] = round(counts.get("batch_records", 0) / max(batches, 1), 2)
        requests = counts.get("producer_Produce", 0)
        per_saga["records_per_produce_request"] = round(
            counts.get("producer_txmsgs", 0) / max(requests, 1), 2
        )
        result["client_per_saga"] = per_saga


def _timed(
    spec: RunSpec,
    *,
    shape: SagaShape,
    tracker: Tracker,
    injector: Injector,
    failed: Callable[[], BaseException | None],
    started: float,
    meters: Meters,
    result: dict[str, Any],
    fleet: Fleet,
) -> list[str]:
    """Warm up, then inject the timed sagas and wait for their ends, metering everything."""
    warm_ids = [f"warmup-{i:04d}" for i in range(spec.warmup)]
    tracker.expect(warm_ids)
    injector.publish(injector.prepare(warm_ids, 0), tracker.starts)
    if not _wait(tracker, failed, time.monotonic() + WARMUP_TIMEOUT_S):
        raise RuntimeError(
            f"warm-up: {len(tracker.ends)}/{len(warm_ids)} sagas ended in {WARMUP_TIMEOUT_S} s"
        )
    result["startup_s"] = round(time.monotonic() - started, 2)
    order_ids = [f"order-{i:06d}" for i in range(spec.sagas)]
    prepared = injector.prepare(order_ids, spec.warmup)
    tracker.expect(order_ids)
    gc.collect()
    fleet.start_meters()  # first, what the idle services cost: polling, heartbeats, timers
    time.sleep(IDLE_S)
    fleet.stop_meters()
    idle = sum(m.cpu_s or 0.0 for m in fleet.members)
    result["idle_service_cpu_ms_per_s"] = round(idle * 1000.0 / IDLE_S, 2)
    fleet.start_meters()
    meters.start()
    wall0 = time.monotonic()
    injector.publish(prepared, tracker.starts)
    injected = time.monotonic() - wall0
    finished = _wait(tracker, failed, wall0 + spec.budget_s)
    meters.stop()
    fleet.stop_meters()
    wall = time.monotonic() - wall0
    result.update(
        _measure(
            shape,
            tracker=tracker,
            order_ids=order_ids,
            finished=finished,
            cpu=meters.figures,
            wall_s=wall,
        )
    )
    result["injection_s"] = round(injected, 3)
    return order_ids


def _run_in_process(
    spec: RunSpec,
    *,
    impl: Implementation,
    ctx: RunContext,
    tracker: Tracker,
    meters: Meters,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Run a Kafka-free implementation (DBOS) in this process: one application process."""
    ctx.observe = tracker.end
    shape = impl.shape
    started = time.monotonic()
    impl.start(ctx, None)
    order_ids: list[str] = []
    try:
        warm_ids = [f"warmup-{i:04d}" for i in range(spec.warmup)]
        tracker.expect(warm_ids)
        for index, order_id in enumerate(warm_ids):
            tracker.starts[order_id] = time.monotonic()
            impl.submit(order_id, shape.start_datum(order_id, index, now_ms()))
        if not _wait(tracker, impl.failure, time.monotonic() + WARMUP_TIMEOUT_S):
            raise RuntimeError(f"warm-up: {len(tracker.ends)}/{len(warm_ids)} sagas ended")
        result["startup_s"] = round(time.monotonic() - started, 2)
        order_ids = [f"order-{i:06d}" for i in range(spec.sagas)]
        datums = [shape.start_datum(o, i, now_ms()) for i, o in enumerate(order_ids)]
        tracker.expect(order_ids)
        gc.collect()
        meters.start()
        wall0 = time.monotonic()
        deadline = wall0 + spec.budget_s
        for order_id, datum in zip(order_ids, datums, strict=True):
            now = time.monotonic()
            if now > deadline:
                break
            tracker.starts[order_id] = now
            impl.submit(order_id, datum)
        finished = _wait(tracker, impl.failure, deadline)
        meters.stop()
        wall = time.monotonic() - wall0
        figures = dict(meters.figures)
        service_cpu = figures.pop("harness") or 0.0
        result.update(
            _measure(
                shape,
                tracker=tracker,
                order_ids=order_ids,
                finished=finished,
                cpu=figures,
                wall_s=wall,
            )
        )
        ended = max(1, result["ended"])
        result["service_cpu_s"] = round(service_cpu, 3)
        result["cpu_ms_per_saga"] = round(service_cpu * 1000.0 / ended, 4)
        result["processes"] = 1
    finally:
        impl.stop()
    result["state_check"] = _check_states(shape, impl.states(), order_ids)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _wait(tracker: Tracker, failed: Callable[[], BaseException | None], until: float) -> bool:
    """Wait for the expected sagas until ``until``; raise as soon as a service has failed."""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return tracker.wait(0)
        if tracker.wait(min(left, 0.5)):
            return True
        error = failed()
        if error is not None:
            raise RuntimeError(f"a service failed: {error!r}") from error


def _per_saga(seconds: float | None, ended: int) -> float | None:
    return None if seconds is None else round(seconds * 1000.0 / max(1, ended), 4)


def _measure(
    shape: SagaShape,
    *,
    tracker: Tracker,
    order_ids: list[str],
    finished: bool,
    cpu: Mapping[str, float | None],
    wall_s: float,
) -> dict[str, Any]:
    """Return throughput, latency percentiles, CPU and correctness of the timed sagas."""
    starts, ends = tracker.starts, tracker.ends
    ended = [o for o in order_ids if o in ends]
    latencies = sorted((ends[o][0] - starts[o]) * 1000.0 for o in ended)
    first = min(starts[o] for o in order_ids if o in starts)
    last = max((ends[o][0] for o in ended), default=first)
    span = max(last - first, 1e-9)
    wrong = 0
    events = 0
    paths: dict[str, int] = {}
    for order_id in ended:
        path = ch.expected_outcome(order_id)
        paths[path] = paths.get(path, 0) + 1
        events += shape.events_of(order_id)
        if ends[order_id][1] != ("completed" if path == "completed" else "failed"):
            wrong += 1
    n = len(ended)
    return {
        "status": "ok" if finished and not wrong else ("timed out" if not finished else "wrong"),
        "ended": n,
        "duration_s": round(span, 3),
        "sagas_per_s": round(n / span, 1),
        "events_per_s": round(events / span, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(latencies[-1], 2) if latencies else None,
        },
        "harness_cpu_ms_per_saga": _per_saga(cpu.get("harness"), n),
        "broker_cpu_ms_per_saga": _per_saga(cpu.get("broker"), n),
        "postgres_cpu_ms_per_saga": _per_saga(cpu.get("postgres"), n),
        "machine_busy_cores": round((cpu.get("machine") or 0.0) / max(wall_s, 1e-9), 2),
        "timed_wall_s": round(wall_s, 3),
        "paths": paths,
        "wrong_outcomes": wrong,
        "duplicate_terminal_events": tracker.duplicates,
    }


def _check_states(
    shape: SagaShape, states: Mapping[str, Mapping[str, str]], order_ids: list[str]
) -> str:
    """Return "ok" when every service's state matches the expected ends, else a diff."""
    wanted = set(order_ids)
    got: dict[str, dict[str, int]] = {}
    for service, per_order in states.items():
        counts: dict[str, int] = {}
        for order_id, state in per_order.items():
            if order_id in wanted:
                counts[state] = counts.get(state, 0) + 1
        if counts:
            got[service] = counts
    expected = expected_state_counts(shape, order_ids)
    return "ok" if got == expected else f"expected {expected}, got {got}"


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and write its JSON to ``--out`` (or stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--impl", required=True, choices=sorted(IMPLEMENTATIONS))
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1, help="processes per service")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--broker-pid", type=int, default=None, help="meter this JVM's CPU")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--postgres-pid", type=int, default=None, help="meter this server")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the timed phase")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--topic-prefix", default="", help="tests only: isolate topic names")
    parser.add_argument("--recreate-topics", action="store_true", help="recreate topics first")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--client-stats", action="store_true", help="librdkafka statistics (diagnostic)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    spec = RunSpec(
        impl=args.impl,
        sagas=args.sagas,
        partitions=args.partitions,
        bootstrap=args.bootstrap,
        budget_s=args.budget,
        warmup=args.warmup,
        topic_prefix=args.topic_prefix,
        replicas=args.replicas,
        postgres_url=args.postgres_url,
        broker_pid=args.broker_pid,
        postgres_pid=args.postgres_pid,
        recreate_topics=args.recreate_topics,
        client_stats=args.client_stats,
    )
    result = run(spec)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0 if result.get("status") == "ok" and result.get("state_check") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
