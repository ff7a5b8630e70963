"""Fixtures of the runtime tests: a fresh shop, its serde, a memory bus and transport."""

from __future__ import annotations

from typing import Any

import pytest

from choreo.transports.memory import MemoryBus, MemoryTransport

from .fixtures.serdes import avro_serde
from .fixtures.shop import Shop, build_shop


@pytest.fixture
def shop() -> Shop:
    """Return the Fulfilment saga's services around a fresh state."""
    return build_shop()


@pytest.fixture(scope="session")
def serde() -> Any:
    """Return the Avro serde of the fixture events."""
    return avro_serde()


@pytest.fixture
def bus() -> MemoryBus:
    """Return an empty memory bus."""
    return MemoryBus()


@pytest.fixture
def transport(bus: MemoryBus) -> MemoryTransport:
    """Return a memory transport on ``bus``."""
    return MemoryTransport(bus)
