"""A replica started as a new process ends what a restarted broker left hanging of its id.

A restarted broker can complete a replica's last transaction without writing its markers
(docs/operating.md): the group offsets it sent stay pending, so a ``read_committed``
consumer of the group never gets its committed offsets (OffsetFetch waits for them), and
its output partitions stay unstable. A replica that lived through the outage commits its
last offsets again (tests/runtime/test_eos_assignment.py); one restarted as a new process
did not know them, and handled nothing, for good. Now every exactly-once worker, once its
transactional id is registered, ends that id's hanging transactions with their remedy:
the output records committed, the unknown offsets aborted (the group reads from its
previous offsets; what was handled there is dropped by the inbox).

The hanging state is made on demand on a broker of its own, as in
tests/transports/test_hanging_transactions.py (a broker restart makes it only by chance).
"""

from __future__ import annotations

import pytest

from choreo.runtime import Worker
from choreo.transports.config import KafkaConfig
from choreo.transports.hanging import find_hanging
from tests.transports.test_hanging_transactions import (
    bootstrap,  # noqa: F401 - the module's broker fixture
    leave_hanging,
)

from .fixtures.serdes import avro_serde
from .test_durability_kafka import ORDERS, RESERVED, _config, _prefix, _publish_orders, _read_all
from .test_durability_kafka import _transport as _durability_transport
from .test_eos_assignment import _reserving_service, run_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BOUND = 40.0
"""Seconds to handle the orders (without the fix: never, the group's offsets stay pending)."""


def test_a_new_process_ends_what_its_transactional_id_left_hanging(bootstrap: str) -> None:  # noqa: F811
    """Its id's last transaction left the group's offsets pending and a record open: the
    new worker ends both at start, handles every order, and the record is not lost."""
    prefix = _prefix()
    transport = _durability_transport("confluent", bootstrap)
    side = f"{prefix}side"
    transport.create_topics([f"{prefix}{ORDERS}", f"{prefix}{RESERVED}", side], partitions=1)
    _publish_orders(transport, prefix, 3)
    service, calls = _reserving_service()
    config = _config(prefix, exactly_once=True, instance_id="inventory-0")
    worker = Worker(service, transport, avro_serde(), config=config)
    transactional_id = config.transactional_id_for(service.name)
    previous = leave_hanging(
        bootstrap,
        visible=side,
        hidden=f"{prefix}{RESERVED}",
        offsets={f"{prefix}{ORDERS}": 2},
        group=worker.group_id,
        transactional_id=transactional_id,
    )
    previous.close(timeout=5)  # the process that died; its transaction stays hanging
    kafka_config = KafkaConfig(bootstrap_servers=bootstrap)
    before = find_hanging(kafka_config, min_age=0.0, transactional_id=transactional_id)
    assert sorted(h.partition.topic for h in before) == [
        "__consumer_offsets",
        f"{prefix}{RESERVED}",
    ]
    worker.start()
    run_until(worker, lambda: len(calls) >= 3, BOUND)
    handled = sorted(calls)
    assert handled == ["o0", "o1", "o2"], f"handled {handled} within {BOUND:.0f} s"
    assert find_hanging(kafka_config, min_age=0.0, transactional_id=transactional_id) == []
    values = [r.value for r in _read_all(bootstrap, f"{prefix}{RESERVED}", 4)]
    assert b"left hanging" in values  # committed, not aborted: a committed output is never lost
    assert len(values) == 4, values
