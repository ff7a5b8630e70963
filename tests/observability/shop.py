"""The example shop on a test kit, and reading metrics back from a registry's exposition."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from choreo.choreography.graph import Choreography
from choreo.choreography.service import Retry, Service
from choreo.runtime import Publisher, Worker, WorkerConfig
from choreo.runtime.middleware import Middleware, default_middleware
from choreo.runtime.serdes import serde_for
from choreo.testing import SagaTestKit
from choreo.tracker import Tracker
from choreo.transports.base import Record, Transport
from choreo.transports.memory import MemoryBus, MemoryTransport
from services.catalog import sample_orders
from services.order import place_order
from services.saga import OrderFulfillment
from services.shop import Shop

REPO = Path(__file__).resolve().parents[2]


NO_WAIT = Retry(max_attempts=5, backoff=0.0, jitter=False)


class Workers:
    """Workers for ``services`` with chosen middleware on one transport, driven by hand.

    Like :class:`~choreo.testing.SagaTestKit` (which takes no middleware): each worker is
    a real :class:`~choreo.runtime.Worker`; :meth:`run_until_idle` polls them round-robin.
    """

    def __init__(
        self,
        services: Sequence[Service],
        serde: Any,
        middleware: Sequence[Middleware],
        *,
        transport: Transport | None = None,
        config: WorkerConfig | None = None,
        group_prefix: str = "",
    ) -> None:
        self.bus = MemoryBus()
        self.transport = transport if transport is not None else MemoryTransport(self.bus)
        self.serde = serde
        self.config = config or WorkerConfig(
            poll_timeout=0.0, retry=NO_WAIT, compensation_retry=NO_WAIT
        )
        self.workers = [
            Worker(
                service,
                self.transport,
                serde,
                config=replace(self.config, group_id=f"{group_prefix}{service.name}"),
                middleware=[*default_middleware(), *middleware],
            )
            for service in services
            if service.handlers
        ]

    def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Give every worker batches round-robin until none handles anything."""
        total = 0
        for _ in range(max_rounds):
            handled = sum(worker.run_once(0.0) for worker in self.workers)
            if not handled:
                return total
            total += handled
        raise AssertionError("workers still busy")

    def run_until(self, condition: Callable[[], bool], *, timeout: float = 60.0) -> None:
        """Run rounds (polls of 0.1 s) until ``condition()`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            for worker in self.workers:
                worker.run_once(0.1)

    def records(self) -> list[Record]:
        """Return every record on the memory bus (every topic, in offset order per topic)."""
        return [record for topic in sorted(self.bus.topics()) for record in self.bus.records(topic)]

    def close(self) -> None:
        """Close every worker."""
        for worker in self.workers:
            worker.close()


class Cluster(Workers):
    """The example shop's five workers with chosen middleware, and a publisher of orders."""

    def __init__(
        self,
        shop: Shop,
        middleware: Sequence[Middleware],
        *,
        transport: Transport | None = None,
        config: WorkerConfig | None = None,
        group_prefix: str = "",
    ) -> None:
        super().__init__(
            shop.services,
            serde_for(shop.services, schemas_dir=REPO / "schemas"),
            middleware,
            transport=transport,
            config=config,
            group_prefix=group_prefix,
        )
        self.shop = shop
        self.publisher = Publisher(
            shop.service("order"), self.transport, self.serde, config=self.config
        )

    def place(self, count: int, seed: int = 1) -> list[str]:
        """Place ``count`` sample orders; return their ids (the correlation ids)."""
        return [
            place_order(self.publisher, self.shop.orders, request)
            for request in sample_orders(count, seed=seed)
        ]

    def close(self) -> None:
        """Close the publisher and every worker."""
        self.publisher.close()
        super().close()


class ShopRun:
    """A shop on a SagaTestKit: place orders, feed a tracker with what was published."""

    def __init__(self, shop: Shop, kit: SagaTestKit) -> None:
        self.shop = shop
        self.kit = kit
        self.publisher = kit.publisher(shop.service("order"))  # on the kit's virtual clock

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
