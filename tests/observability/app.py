"""A service for ``choreo run`` in the observability tests: its handler may block on purpose.

``stock`` reserves stock for each ``OrderPlaced`` of the runtime tests' Fulfilment saga;
an order whose sku is ``"block"`` makes the handler sleep ``quantity`` seconds first (a
handler stuck on a slow call), so the worker's loop stalls and ``/healthz`` must notice.
"""

from __future__ import annotations

import time

from choreo.choreography.service import Service
from tests.runtime.fixtures.events import OrderPlaced, StockReserved
from tests.runtime.fixtures.shop import build_shop

saga = build_shop().saga
stock = Service("stock", sagas=[saga])


@stock.step(on=OrderPlaced, emits=StockReserved)
def reserve(event: OrderPlaced) -> StockReserved:
    """Reserve the order's stock; sleep ``quantity`` seconds first for sku ``"block"``."""
    if event.sku == "block":
        time.sleep(event.quantity)
    return StockReserved(event.order_id, event.sku, event.quantity)
