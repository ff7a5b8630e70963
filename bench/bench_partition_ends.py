"""The ends of many partitions on a healthy broker: one batched call against one query each.

``python bench/bench_partition_ends.py --bootstrap HOST:PORT [--partitions 60] [--rounds 5]``

Baseline (``per-partition``): librdkafka's watermark query of a ``read_committed``
consumer, one partition after the other (what the confluent transport's
``high_watermarks`` did before). Candidate (``batched``): the transport consumer's
``high_watermarks`` (one admin ``list_offsets`` call: one ListOffsets request per leader).
Both are timed in the same run, interleaved, for ``--rounds`` rounds on one topic of
``--partitions`` partitions; the JSON (``bench/results/partition-ends-<ts>.json``) holds
each round's seconds per call and the ratio's min/median/max. The bound a slow broker
meets is a test's matter (tests/transports/test_partition_ends_kafka.py), not timed here.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka as ck

from bench.bench_runtime import spread
from choreo.transports.base import TopicPartition
from choreo.transports.factory import open_transport

RESULTS = Path(__file__).resolve().parent / "results"


def _per_partition(client: ck.Consumer, partitions: list[TopicPartition]) -> dict[Any, int]:
    return {
        tp: client.get_watermark_offsets(
            ck.TopicPartition(tp.topic, tp.partition), timeout=2.0, cached=False
        )[1]
        for tp in partitions
    }


def _timed(call: Any, calls: int) -> tuple[float, Any]:
    started = time.perf_counter()
    for _ in range(calls):
        result = call()
    return (time.perf_counter() - started) / calls, result


def main() -> int:
    """Run the rounds, print the summary, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--partitions", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="calls per round and path")
    args = parser.parse_args()
    topic = f"bench-ends-{uuid.uuid4().hex[:8]}"
    transport = open_transport("confluent", bootstrap=args.bootstrap)
    transport.create_topics([topic], partitions=args.partitions)
    parts = [TopicPartition(topic, n) for n in range(args.partitions)]
    consumer: Any = transport.consumer(f"bench-{topic}")
    raw = ck.Consumer(
        {"bootstrap.servers": args.bootstrap, "group.id": f"bench-raw-{topic}",
         "isolation.level": "read_committed"}
    )
    rounds: list[dict[str, float]] = []
    try:
        for number in range(args.rounds):
            if number % 2:  # interleaved: each path goes first in every other round
                new_s, new = _timed(lambda: consumer.high_watermarks(parts), args.calls)
                base, old = _timed(lambda: _per_partition(raw, parts), args.calls)
            else:
                base, old = _timed(lambda: _per_partition(raw, parts), args.calls)
                new_s, new = _timed(lambda: consumer.high_watermarks(parts), args.calls)
            assert old == new, "the two paths disagree"
            rounds.append({"per-partition": base, "batched": new_s, "ratio": base / new_s})
    finally:
        raw.close()
        consumer.close()
        transport.close()  # type: ignore[attr-defined]
    summary = {
        "benchmark": "partition-ends",
        "partitions": args.partitions,
        "calls_per_round": args.calls,
        "rounds": rounds,
        "per_partition_s": spread([r["per-partition"] for r in rounds], 5),
        "batched_s": spread([r["batched"] for r in rounds], 5),
        "speedup": spread([r["ratio"] for r in rounds], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"partition-ends-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
