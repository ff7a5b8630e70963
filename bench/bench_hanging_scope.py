"""An exactly-once worker's search for its own hanging transactions: its topics, or all.

``python bench/bench_hanging_scope.py [--topics 200] [--partitions 10] [--rounds 7] [--write]``

Starts a broker of its own (scripts/kafka_broker.py), creates ``--topics`` topics of
``--partitions`` partitions, registers one transactional id (one committed transaction)
and times ``end_own_hanging`` for that id, nothing hanging: baseline ``whole cluster``
(``topics=None``, what a worker searched before), candidate ``own topics`` (five of the
topics, as a worker with five input and output topics passes them; ``__consumer_offsets``
is searched by both). Interleaved, alternating order, ``--rounds`` rounds; the JSON
(``bench/results/hanging-scope-<ts>.json``) holds each round's seconds and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from bench.bench_runtime import spread
from bench.sagaload import kafka_broker_module
from choreo.transports.config import KafkaConfig
from choreo.transports.hanging import end_own_hanging

RESULTS = Path(__file__).resolve().parent / "results"
OWN = 5  # topics a worker passes (its inputs, declared outputs, dead letters)


def _register(bootstrap: str, transactional_id: str, topic: str) -> None:
    """Commit one transaction with ``transactional_id`` (so its coordinator knows the id)."""
    producer = ck.Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"x")
    producer.commit_transaction(30)


def main() -> None:
    """Time both searches and print (with ``--write`` record) the per-round ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--topics", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    broker = kafka_broker_module().KafkaBroker(port=0).start()
    try:
        bootstrap = str(broker.bootstrap)
        names = [f"scope-{i:04d}" for i in range(args.topics)]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        created = admin.create_topics([NewTopic(n, args.partitions, 1) for n in names])
        for future in created.values():
            future.result(120)
        transactional_id = f"scope-{uuid.uuid4().hex[:8]}"
        _register(bootstrap, transactional_id, names[0])
        config = KafkaConfig(bootstrap_servers=bootstrap)
        scopes = {"whole cluster": None, "own topics": names[:OWN]}
        end_own_hanging(config, transactional_id, timeout=30)  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in scopes}
        for round_ in range(args.rounds):
            order = list(scopes) if round_ % 2 == 0 else list(reversed(scopes))
            for name in order:
                started = time.perf_counter()
                end_own_hanging(config, transactional_id, topics=scopes[name], timeout=30)
                seconds[name].append(time.perf_counter() - started)
    finally:
        broker.stop()
    ratios = [o / w for o, w in zip(seconds["own topics"], seconds["whole cluster"], strict=True)]
    result = {
        "benchmark": "hanging-scope",
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "partitions": {"cluster": args.topics * args.partitions, "own": OWN * args.partitions},
        "consumer_offsets_searched_by_both": True,
        "seconds": {name: spread(runs, 4) for name, runs in seconds.items()},
        "ratio_own_vs_whole": spread(ratios),
    }
    print(json.dumps(result, indent=1))
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (RESULTS / f"hanging-scope-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
