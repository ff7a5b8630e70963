"""Delivery strategies: how a handled batch's output reaches Kafka and its offsets commit.

One small interface, :class:`Delivery` (see :mod:`choreo.runtime.delivery.base`), and the
strategies that implement it, each with its guarantee in its module documentation:
:class:`AtLeastOnce` (outbox, publish, flush, commit offsets) and :class:`Transactional`
(outputs and offsets in one Kafka transaction). :func:`delivery_for` picks the one a
:class:`~choreo.runtime.config.WorkerConfig` asks for.
"""

from __future__ import annotations

from choreo.runtime.config import WorkerConfig
from choreo.runtime.delivery.at_least_once import AtLeastOnce
from choreo.runtime.delivery.base import Batch, Delivery, DeliveryBase, DeliveryLink, Offsets
from choreo.runtime.delivery.transactional import Transactional
from choreo.transports.base import Transport

__all__ = [
    "AtLeastOnce",
    "Batch",
    "Delivery",
    "DeliveryBase",
    "DeliveryLink",
    "Offsets",
    "Transactional",
    "delivery_for",
]


def delivery_for(transport: Transport, config: WorkerConfig, service: str) -> Delivery:
    """Return the strategy ``config`` selects: transactional when ``exactly_once`` is set."""
    if config.exactly_once:
        return Transactional(transport, config, service)
    return AtLeastOnce(transport, config, service)
