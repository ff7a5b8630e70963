"""The example shop on a test kit, and reading metrics back from a registry's exposition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from choreo.choreography.graph import Choreography
from choreo.runtime import Publisher
from choreo.testing import SagaTestKit
from choreo.tracker import Tracker
from choreo.transports.base import Record
from services.catalog import sample_orders
from services.order import place_order
from services.saga import OrderFulfillment
from services.shop import Shop

REPO = Path(__file__).resolve().parents[2]


class ShopRun:
    """A shop on a SagaTestKit: place orders, feed a tracker with what was published."""

    def __init__(self, shop: Shop, kit: SagaTestKit) -> None:
        self.shop = shop
        self.kit = kit
        self.publisher = Publisher(shop.service("order"), kit.transport, kit.serde)

    def place(self, count: int, seed: int = 1) -> list[str]:
        """Place ``count`` sample orders; return their ids (the correlation ids)."""
        return [
            place_order(self.publisher, self.shop.orders, request)
            for request in sample_orders(count, seed=seed)
        ]

    def new_tracker(self, **options: Any) -> Tracker:
        """Return an empty tracker that knows the shop's choreography."""
        return Tracker(
            choreography=Choreography.from_services(self.shop.services, [OrderFulfillment]),
            **options,
        )

    def records(self) -> list[Record]:
        """Return every record published so far, with offsets in publication order."""
        return [
            Record(r.topic, 0, n, r.key, r.value, tuple(r.headers))
            for n, r in enumerate(self.kit.published)
        ]

    def close(self) -> None:
        """Close the publisher."""
        self.publisher.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Samples of an exposition: {(name, sorted labels): value}."""


def samples(text: str) -> Samples:
    """Return every sample of a text exposition as {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    """Return one sample's value (0.0 when it is absent)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)
