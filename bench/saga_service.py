"""One service of the order saga as its own process: a choreo Worker (confluent-kafka by default).

    python -m bench.saga_service --bootstrap HOST:PORT --service inventory \\
        --prefix bc1234. --layout event-type --partitions 6 \\
        [--producer JSON] [--consumer JSON] [--worker JSON] [--store memory|sqlite:PATH] \\
        [--transport confluent|kafka-python] \\
        [--states-out FILE] [--memprofile DIR [--memprofile-baseline SECONDS]]

The services are those of the peers benchmark (:mod:`bench.peers.choreo_impl`: choreo's
decorators, generated events, choreo's codec); the Kafka client settings are choreo's
defaults (:mod:`choreo.transports.config`) with the ``--producer``/``--consumer``
overrides on top, and the worker's the default :class:`~choreo.runtime.WorkerConfig`
with the ``--worker`` fields on top. SIGTERM finishes the batch in hand and exits; the
service's state counts (per final state) are then written to ``--states-out``; without
it, the handlers' per-order state (the stand-in for the service's business table, which a
deployed service keeps in its database) keeps only the last ``--keep-states`` orders, so
that a long run's RSS measures choreo rather than a dict of every order ever seen (about
100 bytes per order: 5 MB per service in a ten-minute soak).

``--memprofile DIR`` (or the environment variable ``CHOREO_BENCH_MEMPROFILE=DIR``) runs
the service under :class:`bench.memprobe.MemProbe`: tracemalloc keeping
``--memprofile-frames`` frames (25), a memory sample every 30 s (RSS, traced and untraced
bytes, malloc and SQLite counters, object counts, the length of the worker's
containers), a snapshot after ``--memprofile-baseline`` seconds and one at SIGTERM,
before the worker closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from bench.memprobe import MemProbe
from bench.peers import choreography as ch
from bench.peers.choreo_impl import build_serde, build_services
from bench.sagaload import Layout
from choreo.runtime import MemoryInbox, Worker, WorkerConfig
from choreo.store import Inbox, SqliteInbox
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport


def _inbox(spec: str) -> Inbox:
    if spec == "memory":
        return MemoryInbox()
    if spec.startswith("sqlite:"):
        return SqliteInbox(spec.removeprefix("sqlite:"))
    raise SystemExit(f"--store: memory or sqlite:PATH, not {spec!r}")


RECORDS_PRODUCED = "records.produced"
RECORDS_FETCHED = "records.fetched"
"""Keys of :class:`RequestStats` counts that are records, not requests."""


class RequestStats:
    """Keeps librdkafka's request counts per API of this process's clients in a JSON file.

    librdkafka reports, every ``statistics.interval.ms``, how many requests of each kind
    (Produce, Fetch, OffsetCommit, ...) each client sent to each broker since it started;
    the file holds the latest totals per client type, rewritten atomically.
    """

    INTERVAL_MS = 200

    def __init__(self, path: Path) -> None:
        self.path = path
        self.totals: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        """Return the client settings that make librdkafka report to this object."""
        return {"statistics.interval.ms": self.INTERVAL_MS, "stats_cb": self.on_stats}

    def on_stats(self, text: str) -> None:
        """Record one statistics report.

        Besides the requests per API, a producer's report gives the records it sent
        (``txmsgs``, kept as ``records.produced``) and a consumer's the records it
        received (``rxmsgs``, as ``records.fetched``): records per request is what
        batching achieved.
        """
        report = json.loads(text)
        counts: dict[str, int] = {}
        for broker in report.get("brokers", {}).values():
            for api, count in broker.get("req", {}).items():
                if count:
                    counts[api] = counts.get(api, 0) + count
        if report.get("txmsgs"):
            counts[RECORDS_PRODUCED] = int(report["txmsgs"])
        if report.get("rxmsgs"):
            counts[RECORDS_FETCHED] = int(report["rxmsgs"])
        with self._lock:
            self.totals[f"{report.get('type')}-{report.get('name')}"] = counts
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.totals))
            tmp.replace(self.path)


class RecentStates(OrderedDict[str, str]):
    """Per-order states that keep only the ``limit`` orders set first-most-recently."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        if len(self) > self.limit:
            self.popitem(last=False)


def read_request_stats(paths: list[Path]) -> dict[str, int]:
    """Return the request counts per API summed over the files of several services."""
    total: dict[str, int] = {}
    for path in paths:
        if not path.exists():
            continue
        for counts in json.loads(path.read_text()).values():
            for api, count in counts.items():
                total[api] = total.get(api, 0) + count
    return total


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--layout", default="event-type")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--group", default=None)
    parser.add_argument("--producer", default="{}")
    parser.add_argument("--consumer", default="{}")
    parser.add_argument("--worker", default="{}")
    parser.add_argument("--store", default="memory")
    parser.add_argument("--transport", default="confluent", choices=("confluent", "kafka-python"),
                        help="the Kafka client (kafka-python reports no request counts)")
    parser.add_argument("--states-out", type=Path, default=None)
    parser.add_argument("--stats-out", type=Path, default=None,
                        help="keep librdkafka's request counts per API in this file")
    parser.add_argument("--keep-states", type=int, default=1000,
                        help="orders whose state is kept without --states-out")
    parser.add_argument("--memprofile", type=Path,
                        default=os.environ.get("CHOREO_BENCH_MEMPROFILE") or None,
                        help="trace memory (bench.memprobe) into this directory")
    parser.add_argument("--memprofile-baseline", type=float, default=120.0,
                        help="seconds after start of the baseline snapshot")
    parser.add_argument("--memprofile-frames", type=int, default=25,
                        help="frames tracemalloc keeps per allocation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{args.service}: %(message)s")

    layout = Layout(args.layout, args.prefix)
    states: dict[str, dict[str, str]] = {}
    if args.states_out is None:
        states[args.service] = RecentStates(args.keep_states)
    services = {s.name: s for s in build_services(states)}
    service = services[args.service]
    producer: dict[str, Any] = json.loads(args.producer)
    consumer: dict[str, Any] = json.loads(args.consumer)
    if args.stats_out is not None and args.transport == "confluent":
        stats = RequestStats(args.stats_out)
        producer.update(stats.settings())
        consumer.update(stats.settings())
    config = KafkaConfig(bootstrap_servers=args.bootstrap, producer=producer, consumer=consumer)
    worker_fields: dict[str, Any] = json.loads(args.worker)
    worker = Worker(
        service,
        open_transport(args.transport, config=config),
        build_serde(),
        config=WorkerConfig(
            group_id=args.group or f"{args.prefix}{service.name}",
            topic_naming=layout.topic,
            deadletter_naming=layout.deadletter_topic,
            create_topics=False,
            topic_partitions=args.partitions,
            **worker_fields,
        ),
        inbox=_inbox(args.store),
    )
    stop = threading.Event()
    probe = None
    if args.memprofile is not None:
        probe = MemProbe(args.memprofile, args.service, baseline_s=args.memprofile_baseline,
                         frames=args.memprofile_frames,
                         roots={"worker": worker, "states": states})
        probe.start()

    def on_signal(*_: object) -> None:
        if probe is not None and not stop.is_set():
            probe.finish()  # in the loop's thread, between two steps: the worker still open
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run(stop)
    if args.states_out is not None:
        counts = ch.count_states({args.service: states.get(args.service, {})})
        args.states_out.write_text(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
