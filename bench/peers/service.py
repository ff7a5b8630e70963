"""One service of one implementation in a process of its own, as it would be deployed.

``python -m bench.peers.service --impl choreo-confluent --service inventory --run-tag T
--bootstrap HOST:PORT --state-out state.json`` is what the harness starts, once per service
and replica (:mod:`bench.peers.procs`). The process starts the service, prints ``ready``
on stdout, answers each ``cpu`` line on its stdin with ``cpu <CPU seconds so far> <of which
librdkafka threads>`` (the harness meters the timed phase with it;
:mod:`bench.peers.clientstats`), and runs until its stdin is closed (or SIGTERM);
then it stops the service after the batch in hand, writes the service's state dict (order
id -> state) and the error that stopped it, if any, to ``--state-out`` as JSON, and exits
(1 after an error). A service that fails while running also writes its error and exits at
once, so the harness sees it die instead of waiting for sagas that never end.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.peers import clientstats
from bench.peers.harness import RunContext, RunSpec, load


def _watch_stdin(stop: threading.Event) -> None:
    """Answer ``cpu`` lines with this process's CPU seconds; set ``stop`` once stdin closes.

    ``time.process_time`` counts every thread in nanoseconds; /proc counts 10 ms ticks,
    too coarse for a service that spends 50 ms on a run. The librdkafka threads' share
    comes from their schedstat, also in nanoseconds.
    """
    recorder = clientstats.recorder()
    try:
        for line in sys.stdin:
            if line.strip() == "cpu":
                if recorder is not None:
                    recorder.mark()
                total, rdk = time.process_time(), clientstats.thread_cpu()
                print(f"cpu {total:.9f} {rdk:.9f}", flush=True)
    finally:
        stop.set()


def serve(spec: RunSpec, service: str, state_out: Path) -> int:
    """Run ``service`` of ``spec.impl`` until told to stop; write its state; return an exit code."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=_watch_stdin, args=(stop,), name="stdin", daemon=True).start()
    impl = load(spec.impl)
    ctx = RunContext(spec)
    report: dict[str, Any] = {"service": service, "replica": spec.replica, "error": None}
    try:
        impl.start(ctx, service)
        print("ready", flush=True)
        while not stop.wait(0.2):
            error = impl.failure()
            if error is not None:
                raise RuntimeError(f"{service} failed: {error!r}") from error
    except BaseException as exc:  # reported to the harness, which fails the run
        report["error"] = repr(exc)
    finally:
        try:
            impl.stop()
        except BaseException as exc:
            report["error"] = report["error"] or repr(exc)
        try:
            report["states"] = impl.states()
        except Exception as exc:
            report["error"] = report["error"] or f"states: {exc!r}"
            report["states"] = {}
        stats = clientstats.recorder()
        if stats is not None:
            report["client_stats"] = stats.phase()
            report["thread_cpu_ms"] = stats.threads()
        state_out.write_text(json.dumps(report))
    return 1 if report["error"] else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve one service (see the module docs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--impl", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--replica", type=int, default=0)
    parser.add_argument("--run-tag", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--topic-prefix", default="")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--state-out", type=Path, required=True)
    parser.add_argument("--client-stats", action="store_true", help="librdkafka statistics")
    args = parser.parse_args(argv)
    if args.client_stats:
        clientstats.enable()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    spec = RunSpec(
        impl=args.impl,
        sagas=0,
        partitions=args.partitions,
        bootstrap=args.bootstrap,
        topic_prefix=args.topic_prefix,
        postgres_url=args.postgres_url,
        run_tag=args.run_tag,
        replica=args.replica,
    )
    return serve(spec, args.service, args.state_out)


if __name__ == "__main__":
    sys.exit(main())
