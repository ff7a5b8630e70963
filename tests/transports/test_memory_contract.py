"""The transport contract run against the in-process memory bus."""

from __future__ import annotations

import pytest

from choreo.testing.transport_contract import TransactionContract, TransportContract
from choreo.transports.base import Transport
from choreo.transports.memory import MemoryBus, MemoryTransport


class TestMemoryContract(TransportContract, TransactionContract):
    """The memory transport honours the whole contract."""

    patience = 5.0
    poll_timeout = 0.05

    @pytest.fixture
    def transport(self) -> Transport:
        """Return a memory transport on a fresh bus."""
        return MemoryTransport(MemoryBus())
