"""Create a kafka-python client so that a failed constructor leaves no thread running.

kafka-python 3's ``KafkaConsumer`` and ``KafkaAdminClient`` start their network client's
IO thread (``kafka-io-<client id>``) before they bootstrap; when the bootstrap fails (no
broker answers, a refused login, a TLS failure) the constructor raises and nothing can
close that client any more: its thread keeps reconnecting, with backoff, for the life of
the process. :func:`build` hands kafka-python a network client it records and closes such
a client itself when the constructor raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

from kafka.net.compat import KafkaNetClient

__all__ = ["build"]

logger = logging.getLogger(__name__)

_ClientT = TypeVar("_ClientT")
_STOP_TIMEOUT_MS: Final = 5000


def build(factory: Callable[..., _ClientT], settings: dict[str, Any]) -> _ClientT:
    """Return ``factory(**settings)``; a constructor that raises leaves no client running.

    ``settings`` must not name ``kafka_client`` (this function sets it). The
    constructor's exception is raised unchanged.
    """
    made: list[KafkaNetClient] = []

    def network_client(**configs: Any) -> KafkaNetClient:
        client = KafkaNetClient(**configs)
        made.append(client)
        return client

    try:
        return factory(**{**settings, "kafka_client": network_client})
    except BaseException:
        for client in made:
            _close(client)
        raise


def _close(client: KafkaNetClient) -> None:
    """Close a network client whose owner never finished constructing, and end its thread."""
    try:
        client.close()
        client._net.stop(_STOP_TIMEOUT_MS)
    except Exception as exc:  # the constructor's own error is the one to report
        logger.debug("closing a kafka-python client that failed to start: %s", exc)
