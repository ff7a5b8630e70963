"""Benchmark the tracker group: rebuild a million sagas' summaries with one and two instances.

On a real broker started for the run (``scripts/kafka_broker.py``), in one run:

1. **produce** about six events per saga (default 1,000,000 sagas: about 6,300,000
   events, the order-fulfilment mix of ``bench_tracker.py``: completed, declined, out of
   stock, still running, with notices) to one topic per event type, keyed by
   correlation id, every event id a canonical UUID as choreo's own are (until
   2026-12-04 they were ``<cid>:<n>``), from records encoded up front (header templates
   with the ids filled in), with the raw confluent-kafka producer;
2. **one instance**: ``choreo tracker run --group G1`` as its own process rebuilds every
   saga's summary into a new summary topic; done when the group's committed offsets
   cover every event. Reported: events/s (wall, from the process's start), CPU
   seconds, peak RSS (``VmHWM``);
3. **the viewer** over that summary topic (``choreo ui --summaries``, its own process):
   time to the first row of ``/api/sagas``, time until it lists every saga, its peak RSS;
4. **two instances** (``--group G2``, a second summary topic, started together): the
   same rebuild split over two processes; events/s of the pair, each one's CPU and RSS,
   and the viewer again over their summary topic.

The baseline is the single instance of the same run (ratio two/one), and
``bench/results/tracker.json`` holds the in-process fold of an exported file. The
machine is shared (2 cores, the broker included): wall rates move with the other
tenants, CPU seconds much less.

    python bench/bench_tracker_scale.py                    # 1,000,000 sagas, writes JSON
    python bench/bench_tracker_scale.py --sagas 20000 --no-write
    python bench/bench_tracker_scale.py --total-cap 1200   # stop after 20 min, keep what ran

Every phase has a hard cap (``--phase-cap``, and ``--total-cap`` for the whole run): a
phase cut by it records how far it got, and the JSON is rewritten after every phase.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import confluent_kafka as ck

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracker import PATHS, SAGA
from proc_cpu import process_cpu_seconds

from choreo.model.envelope import Envelope

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "tracker_scale.json"
PREFIX = "scale"


# --- the broker and the log -----------------------------------------------------------------


@contextmanager
def broker() -> Iterator[Any]:
    """Yield a fresh single-node broker started by scripts/kafka_broker.py."""
    path = ROOT / "scripts" / "kafka_broker.py"
    spec = importlib.util.spec_from_file_location("kafka_broker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_broker"] = module
    spec.loader.exec_module(module)
    with module.KafkaBroker(port=0) as started:
        started.version = module.KAFKA_VERSION
        yield started


def _fill(
    template: list[tuple[str, bytes]], cid: bytes, eid: bytes, cause: bytes | None, at: int
) -> list[tuple[str, bytes]]:
    """Return a step's headers with the ids and the time filled in (no cause: none)."""
    slots = {b"C": cid, b"E": eid, b"P": cause, b"1": str(at).encode()}
    headers = []
    for name, value in template:
        filled = slots.get(value, value)
        if filled is not None:
            headers.append((name, filled))
    return headers


def _producer(bootstrap: str, partitions: int) -> tuple[ck.Producer, dict[str, str]]:
    """Create the event topics; return a raw producer and the topic of each event type."""
    admin = ck.admin.AdminClient({"bootstrap.servers": bootstrap})
    types = sorted({step[0] for _, path in PATHS for step in path})
    topics = {name: f"{PREFIX}.{name}" for name in types}
    futures = admin.create_topics(
        [ck.admin.NewTopic(t, num_partitions=partitions, replication_factor=1)
         for t in topics.values()]
    )
    for future in futures.values():
        future.result()
    producer = ck.Producer({
        "bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 50,
        "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_000_000, "acks": 1,
    })
    return producer, topics


def produce(
    bootstrap: str, sagas: int, partitions: int, cap_s: float, seed: int = 11
) -> dict[str, Any]:
    """Produce ``sagas`` sagas' events (fewer when ``cap_s`` runs out); return counts and rate."""
    rng = random.Random(seed)
    producer, topics = _producer(bootstrap, partitions)
    # header templates per step: every value but the ids and the time encoded once
    templates = {
        step: list(Envelope(
            event_type=step[0], event_id="E", correlation_id="C", saga=SAGA, role=step[1],
            service=step[2], produced_at_ms=1, causation_id="P", step=step[3],
        ).to_headers())
        for _, path in PATHS for step in path
    }
    weights = [weight for weight, _ in PATHS]
    paths = [path for _, path in PATHS]
    payload = bytes(64)
    clock = int(time.time() * 1000) - sagas * 3
    events = 0
    started = time.perf_counter()
    produced = sagas
    for number in range(sagas):
        if number % 10_000 == 0 and time.perf_counter() - started > cap_s:
            produced = number
            break
        path = rng.choices(paths, weights)[0]
        key = f"{number:08x}-{rng.getrandbits(32):08x}-4000-8000-{rng.getrandbits(48):012x}"
        cid = key.encode()
        cause: bytes | None = None
        at = clock + number * 3
        for index, step in enumerate(path):
            # a canonical UUID, as choreo's own event ids are (derived uuid5 text)
            eid = f"{number:08x}-{index:04x}-5000-8000-{rng.getrandbits(48):012x}".encode()
            headers = _fill(templates[step], cid, eid, cause, at)
            while True:
                try:
                    producer.produce(topics[step[0]], payload, cid, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            cause = eid
            at += rng.randint(2, 400)
            events += 1
        if number % 10_000 == 0:
            producer.poll(0)
    producer.flush()
    seconds = time.perf_counter() - started
    return {"sagas": produced, "events": events, "topics": len(topics), "partitions": partitions,
            "produce_s": round(seconds, 1), "produce_events_per_s": round(events / seconds),
            **({} if produced == sagas else {"status": f"capped at {cap_s:.0f} s"})}


# --- measuring processes ------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """Return a process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def committed_total(bootstrap: str, group: str, partitions: int) -> int:
    """Return the sum of the group's committed offsets over the event topics."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                            "enable.auto.commit": False})
    try:
        types = sorted({step[0] for _, path in PATHS for step in path})
        tps = [
            ck.TopicPartition(f"{PREFIX}.{name}", p) for name in types for p in range(partitions)
        ]
        try:
            return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=30))
        except ck.KafkaException:  # the group coordinator is still loading: ask again later
            return 0
    finally:
        consumer.close()


LOGS = HERE / ".cache"


def _choreo(name: str, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m choreo ARGS`` (its stderr to bench/.cache/<name>.log)."""
    LOGS.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (LOGS / f"{name}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "choreo", *args], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)


def rebuild(bootstrap: str, instances: int, events: int, partitions: int,
            cap_s: float, *, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``instances`` tracker processes in a new group until they committed every event.

    Stops at ``cap_s`` seconds whatever is done; the result then says how far it got
    (``status``) and its rates are those of the events committed so far.
    """
    group, topic = f"bench-{instances}", f"_bench-summaries-{instances}"
    started = time.perf_counter()
    procs = [
        _choreo(f"tracker-{instances}-{n}", "--log-level", "INFO", "tracker", "run",
                "--bootstrap", bootstrap,
                "--group", group, "--summary-topic", topic, "--topics", f"^{PREFIX}\\.",
                "--partitions", str(partitions), "--instance-id", f"i{n}", "--deadline", "3600",
                *extra)
        for n in range(instances)
    ]
    done = 0
    progress: list[tuple[float, int]] = []
    try:
        while time.perf_counter() - started < cap_s:
            time.sleep(1.0)
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a tracker exited ({proc.returncode}): see {LOGS}")
            done = committed_total(bootstrap, group, partitions)
            at = time.perf_counter() - started
            if not progress or at - progress[-1][0] >= 10 or done >= events:
                progress.append((round(at, 1), done))
            if done >= events:
                break
        seconds = time.perf_counter() - started
        cpu = [process_cpu_seconds(p.pid) for p in procs]
        rss = [peak_rss_mib(p.pid) for p in procs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    logs = [LOGS / f"tracker-{instances}-{n}.log" for n in range(instances)]
    written = sum(_summaries_written(log) for log in logs)
    result: dict[str, Any] = {
        "instances": instances, "summary_topic": topic,
        "summary_records_written": written, "seconds": round(seconds, 1),
        "committed_events": done, "events_per_s": round(done / seconds),
        "cpu_seconds": [round(c, 1) for c in cpu],
        "cpu_us_per_event": round(sum(cpu) / max(done, 1) * 1e6, 1), "peak_rss_mib": rss,
        "progress_s_events": progress,
        # a stall at a rebalance shows here: a commit at a revocation that failed or hung
        "failed_revocation_commits": sum(_count(log, "commit at revocation failed")
                                         for log in logs),
        "producer_replacements": sum(_count(log, "replaced its producer") for log in logs),
    }
    if done < events:
        result["status"] = (f"capped: {done:,} of {events:,} events committed "
                            f"({done / events:.0%}) in {cap_s:.0f} s")
    return result


def _summaries_written(log: Path) -> int:
    """Return the saga summaries an instance says it wrote (its last line at a stop)."""
    text = re.sub(r"\s+", " ", log.read_text(errors="replace"))  # the handler wraps lines
    found = re.findall(r"(\d+) saga summaries written", text)
    return int(found[-1]) if found else 0


def _count(log: Path, phrase: str) -> int:
    """Return how many times an instance's log says ``phrase``."""
    return re.sub(r"\s+", " ", log.read_text(errors="replace")).count(phrase)


def viewer(bootstrap: str, topic: str, sagas: int, cap_s: float) -> dict[str, Any]:
    """Start the viewer over a summary topic; time its first row and its full list."""
    port = 18765 + random.randint(0, 1000)
    started = time.perf_counter()
    proc = _choreo(
        "viewer", "ui", "--bootstrap", bootstrap, "--summaries", topic, "--port", str(port)
    )
    first = full = None
    listed = 0
    url = f"http://127.0.0.1:{port}/api/sagas?limit=50"
    try:
        while time.perf_counter() - started < cap_s:
            time.sleep(0.25)  # the page itself refreshes at most every 0.25 s
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    page = json.loads(response.read())
            except OSError:
                continue
            if first is None and page["items"]:
                first = time.perf_counter() - started
            listed = page["total"]
            if listed >= sagas:
                full = time.perf_counter() - started
                break
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result: dict[str, Any] = {
        "first_row_s": None if first is None else round(first, 2),
        "all_sagas_listed_s": None if full is None else round(full, 1),
        "listed": listed, "peak_rss_mib": rss,
    }
    if full is None:
        result["status"] = f"capped: {listed:,} of {sagas:,} sagas listed in {cap_s:.0f} s"
    return result


class Budget:
    """The run's hard time caps: each phase gets at most ``phase_s``, all together ``total_s``."""

    def __init__(self, phase_s: float, total_s: float) -> None:
        self.phase_s = phase_s
        self.ends = time.perf_counter() + total_s

    def cap(self) -> float:
        """Return the cap of the next phase (0 when the total is used up)."""
        return max(0.0, min(self.phase_s, self.ends - time.perf_counter()))


def _record(result: dict[str, Any], path: Path | None) -> None:
    """Write the results so far (after every phase: a run cut short keeps them)."""
    text = json.dumps(result, indent=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _phases(bootstrap: str, args: argparse.Namespace, budget: Budget, result: dict[str, Any],
            out: Path | None) -> None:
    """Run the phases in order, recording each; a phase with no time left is skipped."""
    log = produce(bootstrap, args.sagas, args.partitions, budget.cap())
    result["log"] = log
    print(json.dumps(log), flush=True)
    _record(result, out)
    runs = [("one_instance", 1)] + ([("two_instances", 2)] if args.instances >= 2 else [])
    for name, instances in runs:
        if budget.cap() < 5:
            result.setdefault("skipped", []).append(f"{name}: the total cap was used up")
            continue
        run = rebuild(bootstrap, instances, log["events"], args.partitions, budget.cap(),
                      extra=tuple(args.tracker_args.split()))
        result[name] = run
        print(json.dumps(run), flush=True)
        _record(result, out)
        if budget.cap() < 5:
            result.setdefault("skipped", []).append(f"{name} viewer: the total cap was used up")
            continue
        expected = log["sagas"] if "status" not in run else 10**12
        run["viewer_over_summaries"] = viewer(
            bootstrap, run["summary_topic"], expected, budget.cap()
        )
        print(json.dumps(run["viewer_over_summaries"]), flush=True)
        _record(result, out)
    one, two = result.get("one_instance"), result.get("two_instances")
    if one and two and one["events_per_s"]:
        result["ratio_two_to_one_events_per_s"] = round(
            two["events_per_s"] / one["events_per_s"], 2
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and by default write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--instances", type=int, choices=(1, 2), default=2,
                        help="1: only the one-instance rebuild (and its viewer)")
    parser.add_argument("--phase-cap", type=float, default=900.0,
                        help="hard cap of each phase (produce, rebuild, viewer), seconds")
    parser.add_argument("--total-cap", type=float, default=1800.0,
                        help="hard cap of the whole run after the broker started, seconds")
    parser.add_argument("--tracker-args", default="",
                        help="more options for `choreo tracker run` (e.g. '--align-window 0')")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--no-write", action="store_true", help="do not write results JSON")
    args = parser.parse_args(argv)
    out = None if args.no_write else args.out
    result: dict[str, Any] = {
        "benchmark": "tracker group: rebuild every saga's summary from the event topics",
        "baseline": "one_instance (same run)",
        "caps_s": {"phase": args.phase_cap, "total": args.total_cap},
        "tracker_args": args.tracker_args,
        "notes": (
            "Each instance is a `choreo tracker run` process (confluent transport); a rebuild "
            "is done when the group's committed offsets cover every event (summaries and "
            "offsets commit in one transaction), timed from the processes' start (Python "
            "start-up and the summary-topic load included). The viewer is `choreo ui "
            "--summaries` started after each rebuild: first_row_s is the time from its start "
            "to the first row of /api/sagas, all_sagas_listed_s until it counts every saga. "
            "The broker runs on the same shared 2-core machine; peak RSS is VmHWM. A phase "
            "cut by its cap says so in its status and reports the rates of what it did."
        ),
        "machine": {
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "confluent_kafka": ck.version()[0],
            "librdkafka": ck.libversion()[0],
        },
    }
    budget = Budget(args.phase_cap, args.total_cap)  # the broker's start-up counts too

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # an outer timeout: stop the processes, keep what ran

    signal.signal(signal.SIGTERM, on_term)
    with broker() as kafka:
        result["machine"]["kafka"] = kafka.version
        print(f"broker {kafka.bootstrap}; producing {args.sagas:,} sagas ...", flush=True)
        try:
            _phases(kafka.bootstrap, args, budget, result, out)
        finally:
            result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
            _record(result, out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
