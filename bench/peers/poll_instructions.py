"""Count the instructions per consumed message of the confluent consumer's poll (callgrind).

``bench/peers/replay.py`` counts whole service loops; this isolates one piece of them: the
confluent-kafka transport's :meth:`~choreo.transports.confluent.ConfluentConsumer.poll`
turning librdkafka messages into choreo's :class:`~choreo.transports.base.Record`, over
the replay's recorded input (every service's consumed messages, with the headers choreo
writes), ``--batch`` messages per poll. For comparison, ``ceiling`` runs the hand-written
ceiling's per-message accessors over the same messages (``error``, ``topic``, ``value``,
``key``, ``headers``, ``partition``, ``offset``: what its loop calls). Each figure is the
difference between a run of 3 passes over the messages and one of 1, divided by 2 x the
messages, under valgrind's callgrind with ``PYTHONHASHSEED=0``: set-up costs cancel, and
the count is the same from run to run.

    python -m bench.peers.poll_instructions --sagas 300 --batch 100
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

import confluent_kafka as ck

from bench.peers import replay


def _batches(sagas: int, batch: int, partitions: int) -> list[list[ck.Message]]:
    """Return the replay's recorded input of every service as consumed batches."""
    inputs = replay.record_inputs(sagas)
    return [b for records in inputs.values() for b in replay._messages(records, batch, partitions)]


def _choreo(batches: list[list[ck.Message]], passes: int) -> int:
    """Poll every batch ``passes`` times through choreo's confluent consumer."""
    from choreo.transports.config import KafkaConfig
    from choreo.transports.confluent import ConfluentConsumer

    built = 0
    size = max(len(b) for b in batches)
    with replay.replay_clients():
        replay.ReplayConsumer.batches = batches
        consumer = ConfluentConsumer(KafkaConfig(bootstrap_servers="replay:9"), "g")
        client: Any = consumer._consumer
        poll = consumer.poll
        for _ in range(passes):
            client._batches = iter(batches)
            for _ in batches:
                built += len(poll(size, 0.0))
        consumer.close()
    return built


def _ceiling(batches: list[list[ck.Message]], passes: int) -> int:
    """Call the ceiling loop's per-message accessors on every message ``passes`` times."""
    seen = 0
    for _ in range(passes):
        for messages in batches:
            for msg in messages:
                if msg.error() is not None:
                    continue
                msg.topic()
                msg.value()
                msg.key()
                msg.headers()
                msg.partition()
                msg.offset()
                seen += 1
    return seen


RUNS = {"choreo": _choreo, "ceiling": _ceiling}


def count(name: str, sagas: int, batch: int, partitions: int) -> tuple[float, int]:
    """Return (instructions per message, messages per pass) of ``name`` under callgrind."""
    counts, messages = [], 0
    for passes in (1, 3):
        count, printed = replay.callgrind(
            "bench.peers.poll_instructions", "--run", name, "--sagas", str(sagas),
            "--batch", str(batch), "--partitions", str(partitions), "--passes", str(passes),
        )  # fmt: skip
        counts.append(count)
        messages = int(printed.split()[0]) // passes
    return (counts[1] - counts[0]) / (2 * messages), messages


def main(argv: list[str] | None = None) -> int:
    """Print instructions per message for each implementation (see the module docs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--only", default=",".join(RUNS))
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--passes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        batches = _batches(args.sagas, args.batch, args.partitions)
        gc.collect()
        print(RUNS[args.run](batches, args.passes))
        return 0
    counted = {
        name.strip(): count(name.strip(), args.sagas, args.batch, args.partitions)
        for name in args.only.split(",")
        if name.strip()
    }
    for name, (per_message, messages) in counted.items():
        print(f"{name:<8} instructions/message {per_message:,.0f} ({messages} messages a pass)")
    if "ceiling" in counted and "choreo" in counted:
        print(f"choreo / ceiling: {counted['choreo'][0] / counted['ceiling'][0]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
