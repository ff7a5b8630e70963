"""Replay one recorded saga load through choreo's and the ceiling's service loops, no broker.

The peers benchmark measures each service process's CPU per saga with a real broker on a
shared machine: the figure carries the broker's scheduling, the batch sizes a run happened
to poll and every other tenant's noise, so two runs of the same code differ by more than a
change to the per-event path. This tool takes the broker out to attribute that path:

1. it records the consumed input of every service: the start events as the harness's
   injector builds them, then each service's output as the ceiling's loop emits it (the
   same bytes and headers choreo writes), routed to the services that consume it;
2. for each implementation (``ceiling``, ``choreo-confluent``) and service it builds the
   real service loop (the ceiling's :class:`~bench.peers.raw_confluent.LoopService`,
   choreo's :class:`~choreo.runtime.Worker` with its confluent-kafka transport and a
   memory inbox) over *replay clients*: confluent-kafka ``Consumer``/``Producer``
   stand-ins whose ``consume`` returns the recorded records as real
   ``confluent_kafka.Message`` objects, ``--batch`` at a time, and whose ``produce`` and
   ``flush`` only count. Everything above the client calls is the code that runs in the
   benchmark;
3. it runs the loops ``--rounds`` times, interleaved, and reports the loop thread's CPU
   per saga (``time.thread_time``) for each, with the ratio choreo / ceiling.

``--profile FILE`` also writes a cProfile of choreo's loops (``python -m pstats FILE``);
``--instructions`` counts instead, under valgrind's callgrind, the instructions per saga
of each implementation: the difference between a run of 3 rounds and one of 1 round,
divided by 2 x the sagas, so every set-up cost cancels out (no full collections between
rounds then; the loops' own garbage collections count) (``PYTHONHASHSEED=0``; a
deterministic figure, unlike CPU time on a shared machine; a few minutes).

What this does not measure: librdkafka's own threads, the client calls' time inside
librdkafka, idle polling, and the batch sizes of a live run (see ``bench/README.md``,
"Peers").

    python -m bench.peers.replay --sagas 2000 --batch 100 --rounds 5
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import confluent_kafka as ck

from bench.peers import choreography as ch
from bench.peers import raw_confluent
from bench.peers.harness import RunContext, RunSpec
from bench.peers.shape import CHOREOGRAPHED

Recorded = tuple[str, bytes, bytes, list[tuple[str, bytes]]]
"""One record as a service consumes it: (topic, key, value, headers)."""


class ReplayConsumer:
    """A confluent-kafka Consumer stand-in returning recorded messages (see module docs)."""

    batches: list[list[ck.Message]] = []  # set before a loop is built
    done: threading.Event = threading.Event()

    def __init__(self, settings: dict[str, Any]) -> None:
        self._batches = iter(type(self).batches)
        self._done = type(self).done

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        """Accept the subscription (no rebalance happens in a replay)."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[ck.Message]:
        """Return the next recorded batch; once none is left, signal the loop to stop."""
        batch = next(self._batches, None)
        if batch is None:
            self._done.set()
            return []
        return batch

    def poll(self, timeout: float | None = None) -> None:
        """Return nothing (every batch comes from :meth:`consume`)."""
        self._done.set()

    def commit(self, offsets: list[ck.TopicPartition], asynchronous: bool = True) -> Any:
        """Accept the offsets (as the broker would, without errors)."""
        return offsets

    def close(self) -> None:
        """Nothing to release."""

    def assignment(self) -> list[ck.TopicPartition]:
        """Return no partitions."""
        return []


class ReplayProducer:
    """A confluent-kafka Producer stand-in that counts, or records, what is produced."""

    sink: list[Recorded] | None = None  # set while recording the input

    def __init__(self, settings: dict[str, Any]) -> None:
        self.produced = 0
        self._sink = type(self).sink

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any
    ) -> None:
        """Count the record (and keep it while recording)."""
        self.produced += 1
        if self._sink is not None:
            self._sink.append((topic, key, value, list(kw.get("headers") or ())))  # type: ignore[arg-type]

    def poll(self, timeout: float | None = None) -> int:
        """Serve nothing."""
        return 0

    def flush(self, timeout: float | None = None) -> int:
        """Report every record acknowledged."""
        return 0

    def __len__(self) -> int:
        return 0

    def purge(self) -> None:
        """Nothing is queued."""

    def close(self) -> None:
        """Nothing to release."""


@contextmanager
def replay_clients() -> Iterator[None]:
    """Make confluent-kafka's clients, as the two loops create them, the replay clients."""
    saved = ck.Consumer, ck.Producer, raw_confluent.Consumer, raw_confluent.Producer
    ck.Consumer = raw_confluent.Consumer = ReplayConsumer  # type: ignore[misc,assignment]
    ck.Producer = raw_confluent.Producer = ReplayProducer  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        ck.Consumer, ck.Producer, raw_confluent.Consumer, raw_confluent.Producer = saved  # type: ignore[misc]


def _context() -> RunContext:
    spec = RunSpec(impl="replay", sagas=0, partitions=1, bootstrap="replay:9", run_tag="replay")
    return RunContext(spec)


def _start_events(sagas: int) -> list[Recorded]:
    """Return the start events, built as the harness's injector builds them."""
    from choreo.avro.codec import SingleObjectCodec
    from choreo.avro.loader import load_directory

    codec = SingleObjectCodec(load_directory(ch.REPO_ROOT / "schemas"))
    shape, now = CHOREOGRAPHED, time.time_ns() // 1_000_000
    events: list[Recorded] = []
    for index in range(sagas):
        order_id = f"order-{index:07d}"
        payload = codec.encode(shape.start_event, shape.start_datum(order_id, index, now))
        headers = shape.start_headers(order_id, str(uuid.UUID(int=index + 1, version=4)), now)
        events.append((shape.start_event, order_id.encode(), payload, headers))
    return events


def record_inputs(sagas: int) -> dict[str, list[Recorded]]:
    """Return every service's consumed records for ``sagas`` sagas, in the order it reads them.

    The saga advances wave by wave: each service handles what it has been sent so far with
    the ceiling's loop, and its output goes to the services subscribed to its topics.
    """
    owner = {t: s for s, topics in ch.SUBSCRIPTIONS.items() for t in topics}
    inputs: dict[str, list[Recorded]] = defaultdict(list)
    wave = _start_events(sagas)
    ctx = _context()
    with replay_clients():
        while wave:
            by_service: dict[str, list[Recorded]] = defaultdict(list)
            for record in wave:
                if record[0] in owner:
                    by_service[owner[record[0]]].append(record)
            wave = []
            for service, records in by_service.items():
                inputs[service].extend(records)
                ReplayProducer.sink = wave
                try:
                    _run_ceiling(ctx, service, _messages(records, 500))
                finally:
                    ReplayProducer.sink = None
    return dict(inputs)


def _messages(records: list[Recorded], batch: int, partitions: int = 1) -> list[list[ck.Message]]:
    """Return ``records`` as consumed confluent-kafka messages, ``batch`` per list.

    With ``partitions`` > 1 each record goes to partition crc32(key) % partitions (offsets
    counted per partition), so a batch holds records of several partitions, as at 6
    partitions on a broker.
    """
    offsets = [0] * partitions
    messages = []
    for topic, key, value, headers in records:
        partition = zlib.crc32(key) % partitions
        messages.append(
            ck.Message(
                topic=topic,
                partition=partition,
                offset=offsets[partition],
                key=key,
                value=value,
                headers=headers,
                timestamp=(ck.TIMESTAMP_CREATE_TIME, 1),
            )
        )
        offsets[partition] += 1
    return [messages[i : i + batch] for i in range(0, len(messages), batch)]


class _Codecs:
    """The codecs both loops use, built once (a live service builds its own once too)."""

    ceiling: tuple[raw_confluent.Decode, raw_confluent.Encode] | None = None
    serde: Any = None


def _ceiling_loop(ctx: RunContext, service: str) -> Callable[[], object]:
    """Return the ceiling's loop of ``service`` over the replay consumer's batches."""
    if _Codecs.ceiling is None:
        _Codecs.ceiling = raw_confluent.LoopImplementation("ceiling")._codec(ctx)
    headers = raw_confluent.ceiling_headers()
    loop = raw_confluent.LoopService(ctx, service, ReplayConsumer.done, _Codecs.ceiling, headers)
    return loop._loop


def _choreo_loop(ctx: RunContext, service: str) -> Callable[[], object]:
    """Return a started choreo Worker's loop for ``service`` (as the benchmark builds it)."""
    from bench.peers import choreo_impl
    from choreo.runtime import Worker
    from choreo.store import MemoryStore
    from choreo.transports.factory import open_transport

    if _Codecs.serde is None:
        _Codecs.serde = choreo_impl.build_serde()
    declared = next(s for s in choreo_impl.build_services({}) if s.name == service)
    transport = open_transport("confluent", config=choreo_impl.kafka_config(ctx, stats=False))
    worker = Worker(
        declared,
        transport,
        _Codecs.serde,
        config=choreo_impl.worker_config(ctx, service),
        inbox=MemoryStore(allow_replicas=True),  # the benchmark's MemoryInbox, unchecked group
        middleware=choreo_impl.middleware(),
    )
    worker.start()
    done = ReplayConsumer.done

    def loop() -> None:
        while not done.is_set():
            worker.run_once(0.0)

    loop.close = worker.close  # type: ignore[attr-defined]
    return loop


def _run(
    build: Callable[[RunContext, str], Callable[[], object]],
    ctx: RunContext,
    service: str,
    batches: list[list[ck.Message]],
    profile: cProfile.Profile | None = None,
) -> float:
    """Run one service's loop over ``batches``; return the loop's thread CPU seconds."""
    ReplayConsumer.batches, ReplayConsumer.done = batches, threading.Event()
    loop = build(ctx, service)
    if profile is not None:
        profile.enable()
    started = time.thread_time()
    loop()
    spent = time.thread_time() - started
    if profile is not None:
        profile.disable()
    close = getattr(loop, "close", None)
    if close is not None:
        close()
    return spent


def _run_ceiling(ctx: RunContext, service: str, batches: list[list[ck.Message]]) -> float:
    """Run the ceiling's loop of ``service`` over ``batches``; return its thread CPU seconds."""
    return _run(_ceiling_loop, ctx, service, batches)


LOOPS: dict[str, Callable[[RunContext, str], Callable[[], object]]] = {
    "ceiling": _ceiling_loop,
    "choreo-confluent": _choreo_loop,
}


def measure(  # noqa: PLR0917 - the load, its size and the run's shape
    inputs: dict[str, list[Recorded]],
    sagas: int,
    batch: int,
    rounds: int,
    only: list[str],
    profile: cProfile.Profile | None = None,
    *,
    partitions: int = 1,
    collect: bool = True,
) -> dict[str, list[float]]:
    """Return each implementation's CPU microseconds per saga, one figure per round.

    ``collect``: a full garbage collection before each implementation's round (outside
    the measured loops); ``--instructions`` turns it off, since a full collection's
    instructions would count in the difference between the runs.
    """
    ctx = _context()
    batches = {s: _messages(records, batch, partitions) for s, records in inputs.items()}
    per_saga: dict[str, list[float]] = {name: [] for name in only}
    with replay_clients():
        for round_ in range(rounds + 1):  # round 0 warms up (lazily compiled codecs)
            for name in only:
                if collect:
                    gc.collect()
                spent = 0.0
                for service in ch.SUBSCRIPTIONS:
                    profiled = profile if round_ and name != "ceiling" else None
                    spent += _run(LOOPS[name], ctx, service, batches[service], profiled)
                if round_:
                    per_saga[name].append(spent / sagas * 1e6)
    return per_saga


def instructions(name: str, sagas: int, batch: int, partitions: int = 1) -> float:
    """Return callgrind's instructions per saga of ``name``'s loops (see the module docs)."""
    counts = [
        callgrind(
            "bench.peers.replay", "--only", name, "--sagas", str(sagas), "--batch", str(batch),
            "--rounds", str(rounds), "--partitions", str(partitions), "--no-collect",
        )[0]
        for rounds in (1, 3)
    ]  # fmt: skip
    return (counts[1] - counts[0]) / (2 * sagas)


def callgrind(module: str, *args: str) -> tuple[int, str]:
    """Run ``python -m module args`` under callgrind (``PYTHONHASHSEED=0``); return the
    instructions it counted and what the module printed."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as scratch:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out",
            sys.executable, "-m", module, *args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr}")
    return int(found.group(1)), done.stdout


def main(argv: list[str] | None = None) -> int:
    """Record the load, replay it, print CPU per saga and the ratio (see the module docs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="records per consumed batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=1, help="records spread over these")
    parser.add_argument("--only", default=",".join(LOOPS), help="comma-separated")
    parser.add_argument("--profile", default=None, help="write a cProfile of choreo's loops")
    parser.add_argument("--instructions", action="store_true", help="count (callgrind)")
    parser.add_argument(
        "--no-collect", action="store_true", help="no full garbage collection between rounds"
    )
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.instructions:
        counted = {
            name: instructions(name, args.sagas, args.batch, args.partitions) for name in only
        }
        for name, per_saga in counted.items():
            print(f"{name:<18} instructions/saga {per_saga:,.0f}")
        if "ceiling" in counted and len(counted) > 1:
            for name, per_saga in counted.items():
                if name != "ceiling":
                    print(f"{name} / ceiling: {per_saga / counted['ceiling']:.3f}")
        return 0
    inputs = record_inputs(args.sagas)
    events = sum(len(r) for r in inputs.values())
    print(
        f"{args.sagas} sagas, {events} consumed records, batches of {args.batch}, "
        f"{args.partitions} partition(s)"
    )
    profile = cProfile.Profile() if args.profile else None
    per_saga = measure(
        inputs,
        args.sagas,
        args.batch,
        args.rounds,
        only,
        profile,
        partitions=args.partitions,
        collect=not args.no_collect,
    )
    for name, values in per_saga.items():
        print(
            f"{name:<18} CPU us/saga median {statistics.median(values):7.1f} "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )
    if "ceiling" in per_saga and len(per_saga) > 1:
        base = per_saga["ceiling"]
        for name, values in per_saga.items():
            if name != "ceiling":
                ratios = sorted(v / b for v, b in zip(values, base, strict=True))
                print(
                    f"{name} / ceiling: median {statistics.median(ratios):.3f} "
                    f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f})"
                )
    if profile is not None:
        profile.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
