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

__all__ = ["build", "close_network_client"]

logger = logging.getLogger(__name__)

_ClientT = TypeVar("_ClientT")
_STOP_TIMEOUT_MS: Final = 5000


def build(
    factory: Callable[..., _ClientT],
    settings: dict[str, Any],
    made: list[Any] | None = None,
) -> _ClientT:
    """Return ``factory(**settings)``; a constructor that raises leaves no client running.

    ``kafka_client`` in ``settings`` is replaced. The constructor's exception is raised
    unchanged. The network clients created are appended to ``made`` when given, so that
    another thread may end a bootstrap early with :func:`close_network_client`.
    """
    made = [] if made is None else made
    default = getattr(factory, "DEFAULT_CONFIG", {}).get("kafka_client")
    if default is None:  # not a client that takes a network client: nothing to record
        return factory(**settings)

    def network_client(**configs: Any) -> Any:
        client = default(**configs)
        made.append(client)
        return client

    try:
        return factory(**{**settings, "kafka_client": network_client})
    except BaseException:
        for client in made:
            close_network_client(client)
        raise


def close_network_client(client: Any) -> None:
    """Close a network client whose owner has not finished constructing; end its thread.

    Safe from another thread: a bootstrap under way then fails at once.
    """
    try:
        client.close()
        net = getattr(client, "_net", None)  # kafka-python 3's IO loop
        if net is not None:
            net.stop(_STOP_TIMEOUT_MS)
    except Exception as exc:  # the constructor's own error is the one to report
        logger.debug("closing a kafka-python client that failed to start: %s", exc)
