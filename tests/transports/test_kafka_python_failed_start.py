"""A kafka-python client that cannot bootstrap leaves no network thread running.

kafka-python 3's consumer and admin client start their ``kafka-io`` thread before they
bootstrap, and a constructor that raises leaves that thread reconnecting for the life of
the process (:mod:`choreo.transports.kafka_python_build`). Nothing listens on port 1 of
the loopback address, so every bootstrap here fails after ``bootstrap.timeout.ms``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from choreo.errors import TransportError
from choreo.transports.config import KafkaConfig
from choreo.transports.kafka_python import (
    KafkaPythonConsumer,
    KafkaPythonProducer,
    KafkaPythonTransport,
)
from choreo.transports.membership import remove_static_member

DEAD = KafkaConfig(bootstrap_servers="127.0.0.1:1", common={"bootstrap.timeout.ms": 300})


def _io_threads() -> set[threading.Thread]:
    """Return the kafka-python network threads alive now."""
    return {t for t in threading.enumerate() if t.name.startswith("kafka-io") and t.is_alive()}


STARTS: dict[str, Callable[[], object]] = {
    "consumer": lambda: KafkaPythonConsumer(DEAD, "failed-start"),
    "producer": lambda: KafkaPythonProducer(DEAD),
    "admin": lambda: KafkaPythonTransport(DEAD).list_topics(),
    "static-member removal": lambda: remove_static_member(DEAD, "failed-start", "replica-1"),
}


@pytest.mark.parametrize("what", sorted(STARTS))
def test_a_failed_bootstrap_leaves_no_io_thread(what: str) -> None:
    """The start fails with a TransportError, and no kafka-io thread of it is left."""
    before = _io_threads()
    with pytest.raises(TransportError):
        STARTS[what]()
    deadline = time.monotonic() + 30  # a loaded machine ends a thread late, not never
    while _io_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _io_threads() - before
