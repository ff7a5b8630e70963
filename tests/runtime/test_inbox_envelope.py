"""The inbox deduplicates a record under its event id only once its envelope is valid."""

from __future__ import annotations

from typing import Any

import pytest

from choreo.model.envelope import Envelope, Header
from choreo.runtime import DeadLetter, DeadLetterReason, Worker, WorkerConfig
from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.events import OrderPlaced
from .fixtures.shop import Shop
from .helpers import run_until_idle

ORDER_TOPIC = "test.runtime.OrderPlaced"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda h: [(n, v) for n, v in h if n != Header.ROLE], id="missing-role"),
        pytest.param(lambda h: [*h, (Header.EVENT_ID, b"other")], id="repeated-id"),
        pytest.param(
            lambda h: [(n, b"\xff" if n == Header.SAGA else v) for n, v in h], id="not-utf8"
        ),
    ],
)
def test_garbage_with_a_real_event_id_does_not_pre_empt_it(
    shop: Shop, bus: MemoryBus, transport: MemoryTransport, serde: Any, spoil: Any
) -> None:
    """A record with a broken envelope but a real event's id is dead-lettered under its
    own id; the real event that follows is still handled."""
    envelope = Envelope.start(ORDER_TOPIC, saga="Fulfilment", service="orders")
    headers = envelope.to_headers()
    payload = serde.encode(OrderPlaced("o1", "book", 1, 100))
    producer = transport.producer()
    producer.publish(ORDER_TOPIC, payload, key=b"k", headers=spoil(headers))
    producer.publish(ORDER_TOPIC, payload, key=b"k", headers=headers)
    producer.flush()
    inventory = Worker(shop.inventory, transport, serde, config=WorkerConfig(poll_timeout=0.0))
    run_until_idle([inventory])
    letters = [DeadLetter.from_record(r) for r in bus.records("choreo.deadletter.inventory")]
    assert [d.reason for d in letters] == [DeadLetterReason.BAD_ENVELOPE]
    assert shop.state.count("inventory.reserve") == 1
    inventory.close()
