"""The broker-free replay of the peers saga (bench/peers/replay.py): same input, same output.

The replay attributes choreo's per-event CPU against the ceiling's only if both loops
handle the same records and emit the same bytes; these tests check that on a small load.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.peers import choreography as ch  # noqa: E402
from bench.peers import replay  # noqa: E402

SAGAS = 60


def _consumed_per_saga(order_ids: list[str]) -> int:
    """Return how many records the services consume for ``order_ids`` (terminals excluded)."""
    return sum(ch.EVENTS_PER_PATH[ch.expected_outcome(o)] - 1 for o in order_ids)


def test_the_recorded_input_is_every_consumed_record_of_every_saga() -> None:
    """Each service gets exactly the event types it subscribes to, all sagas' worth."""
    inputs = replay.record_inputs(SAGAS)
    order_ids = [f"order-{i:07d}" for i in range(SAGAS)]
    assert sum(len(r) for r in inputs.values()) == _consumed_per_saga(order_ids)
    for service, records in inputs.items():
        assert {r[0] for r in records} <= set(ch.SUBSCRIPTIONS[service])
    assert len(inputs["inventory"]) >= SAGAS  # every start event


def _outputs(name: str, inputs: dict[str, list[replay.Recorded]]) -> list[replay.Recorded]:
    """Return what ``name``'s loops produce for ``inputs``, in order, without produced-at."""
    ctx = replay._context()
    produced: list[replay.Recorded] = []
    with replay.replay_clients():
        replay.ReplayProducer.sink = produced
        try:
            for service in ch.SUBSCRIPTIONS:
                replay._run(replay.LOOPS[name], ctx, service, replay._messages(inputs[service], 7))
        finally:
            replay.ReplayProducer.sink = None
    return [
        (topic, key, value, [h for h in headers if h[0] != ch.H_AT])
        for topic, key, value, headers in produced
    ]


def test_choreo_and_the_ceiling_emit_the_same_records_for_the_same_input() -> None:
    """Topics, keys, payloads and headers (ids included) agree; only produced-at differs."""
    inputs = replay.record_inputs(SAGAS)
    ceiling = _outputs("ceiling", inputs)
    choreo = _outputs("choreo-confluent", inputs)
    assert len(ceiling) == sum(len(r) for r in inputs.values())
    assert choreo == ceiling


def test_measure_reports_a_figure_per_round_and_implementation() -> None:
    """Every round of every implementation gives a positive CPU time per saga."""
    inputs = replay.record_inputs(10)
    figures = replay.measure(inputs, 10, 50, 2, list(replay.LOOPS))
    assert set(figures) == set(replay.LOOPS)
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in figures.values())
