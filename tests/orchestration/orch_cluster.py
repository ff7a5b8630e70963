"""The example shop on a real broker with its order saga orchestrated: one process per service.

:class:`OrchestratedCluster` is :class:`~e2e.shop_cluster.ShopCluster` plus the
orchestrator's ``choreo run`` process (or several replicas of it, ``orchestrator-N``, in
one consumer group), its topics and a tracker that knows the orchestrated saga.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from e2e.shop_cluster import ShopCluster, console_script

from choreo.choreography.graph import Choreography
from choreo.runtime.serdes import event_classes
from choreo.tracker import Tracker
from services import orchestrated
from services.catalog import sample_orders
from services.config import ServiceConfig
from services.order import place_order
from services.saga import OrderFulfillmentOrchestrated


class OrchestratedCluster(ShopCluster):
    """The shop's five service processes plus the orchestrator's, on one broker."""

    def __init__(self, bootstrap: str, workdir: Path, config: ServiceConfig) -> None:
        super().__init__(bootstrap, workdir, config)
        self.orchestrator = orchestrated.create()
        services = [*self.shop.services, self.orchestrator.service]
        self.serde = type(self.serde)(self.codec, event_classes(services))
        self.tracker = Tracker(
            choreography=Choreography.from_services(services, [OrderFulfillmentOrchestrated]),
            default_deadline_s=120.0,
            decode=self.codec.decode_any,
        )
        self.starts["orchestrator"] = 0

    def command(self, service: str) -> list[str]:
        """Return the ``choreo run`` command line of ``service`` (or of an orchestrator).

        ``orchestrator`` is replica 0; ``orchestrator-N`` is replica N (its own SQLite
        store and instance id, the same group).
        """
        if not service.startswith("orchestrator"):
            return super().command(service)
        replica = service if service != "orchestrator" else "orchestrator-0"
        line = super().command("order")
        line[2] = "services.orchestrated:service"
        line[line.index("--inbox") + 1] = str(self.workdir / f"{service}.sqlite3")
        line[line.index("--group") + 1] = f"{self.prefix}orchestrator"
        line[line.index("--instance-id") + 1] = replica
        return [line[0], "--log-level", "INFO", *line[1:]]

    def start(self, *replicas: str) -> None:
        """Create the orchestration's topics too, then start everything and the orchestrator.

        ``replicas`` names the orchestrator processes to start (default: ``orchestrator``).
        """
        services = [*self.shop.services, self.orchestrator.service]
        topics = {self.topic(c.__avro_name__) for c in event_classes(services)}
        self.transport.create_topics(sorted(topics), partitions=3)
        super().start()
        for replica in replicas or ("orchestrator",):
            self.starts.setdefault(replica, 0)
            self.start_service(replica)

    def place_orchestrated(self, count: int, *, seed: int, part: slice = slice(None)) -> None:
        """Place ``count`` orders (only ``part`` of them when given), each opening the
        orchestrated saga."""
        assert self.publisher is not None
        with self.publisher.batch():
            for request in sample_orders(count, seed=seed)[part]:
                place_order(self.publisher, self.shop.orders, request, orchestrated=True)

    def orchestrator_event_classes(self) -> list[type]:
        """Return the event classes of the orchestrated saga (start, commands, replies, ends)."""
        return list(event_classes([self.orchestrator.service]))


@contextmanager
def orchestrated_shop(bootstrap: str, workdir: Path, *, seed: int) -> Iterator[OrchestratedCluster]:
    """Yield an orchestrated shop (20% declined, 5% failed dispatches); closed afterwards."""
    assert console_script()
    made = OrchestratedCluster(
        bootstrap,
        workdir,
        ServiceConfig(seed=seed, decline_rate=0.2, dispatch_failure_rate=0.05),
    )
    try:
        yield made
    finally:
        made.close()
