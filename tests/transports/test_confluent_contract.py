"""The transport contract run against a real broker through confluent-kafka."""

from __future__ import annotations

import pytest

from choreo.testing.transport_contract import TransactionContract, TransportContract
from choreo.transports.base import Transport
from choreo.transports.confluent import ConfluentTransport

from .kafka_settings import fast_config

pytestmark = pytest.mark.kafka


class TestConfluentContract(TransportContract, TransactionContract):
    """The confluent transport honours the whole contract on a real broker."""

    @pytest.fixture
    def transport(self, kafka_bootstrap: str) -> Transport:
        """Return a confluent transport on the session's broker."""
        return ConfluentTransport(fast_config(kafka_bootstrap))
