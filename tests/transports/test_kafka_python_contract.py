"""The transport contract run against a real broker through kafka-python."""

from __future__ import annotations

import pytest

from choreo.testing.transport_contract import TransactionContract, TransportContract
from choreo.transports.base import Transport
from choreo.transports.kafka_python import KafkaPythonTransport

from .kafka_settings import fast_config

pytestmark = pytest.mark.kafka


class TestKafkaPythonContract(TransportContract, TransactionContract):
    """The kafka-python transport honours the whole contract on a real broker."""

    @pytest.fixture
    def transport(self, kafka_bootstrap: str) -> Transport:
        """Return a kafka-python transport on the session's broker."""
        return KafkaPythonTransport(fast_config(kafka_bootstrap))
