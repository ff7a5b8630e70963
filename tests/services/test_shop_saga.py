"""The five services together on the in-memory bus: outcomes, compensations, timeouts, state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo.choreography.checks import check
from choreo.choreography.graph import Choreography
from choreo.choreography.service import Service
from choreo.model.envelope import now_ms
from choreo.runtime import Publisher
from choreo.store import MemoryStore
from choreo.testing import SagaTestKit
from choreo.tracker import SagaStatus, TimeoutService, Tracker
from choreo.transports.base import Record
from services.audit import audit
from services.catalog import sample_orders
from services.config import ServiceConfig
from services.order import place_order
from services.saga import OrderFulfillment
from services.shop import SERVICE_NAMES, Shop, build_shop

REPO = Path(__file__).resolve().parents[2]

DECLINED = [
    "shop.orders.OrderCreated",
    "shop.inventory.InventoryReserved",
    "shop.payments.PaymentDeclined",
    "shop.inventory.InventoryReleased",
    "shop.orders.OrderFailed",
    "shop.notifications.NotificationSent",
]
DISPATCH_FAILED = [
    "shop.orders.OrderCreated",
    "shop.inventory.InventoryReserved",
    "shop.payments.PaymentCharged",
    "shop.shipping.ShipmentCreated",
    "shop.shipping.ShipmentDispatchFailed",
    "shop.shipping.ShipmentCancelled",
    "shop.payments.PaymentRefunded",
    "shop.inventory.InventoryReleased",
    "shop.orders.OrderFailed",
    "shop.notifications.NotificationSent",
]
COMPLETED = [
    "shop.orders.OrderCreated",
    "shop.inventory.InventoryReserved",
    "shop.payments.PaymentCharged",
    "shop.shipping.ShipmentCreated",
    "shop.shipping.ShipmentDispatched",
    "shop.orders.OrderCompleted",
    "shop.notifications.NotificationSent",
]
OUT_OF_STOCK = [
    "shop.orders.OrderCreated",
    "shop.inventory.InventoryReservationFailed",
    "shop.orders.OrderFailed",
    "shop.notifications.NotificationSent",
]


def memory_store(service: Service) -> MemoryStore:
    """Return a memory store: no ctx.db, so each service keeps its state in its own file.

    The audit reads those files, and a fresh kit (its inboxes lost) finds the state there.
    """
    return MemoryStore()


class Run:
    """A shop on a SagaTestKit, its stores in files so that the audit can read them."""

    def __init__(self, shop: Shop, kit: SagaTestKit) -> None:
        self.shop = shop
        self.kit = kit
        self.publisher = Publisher(shop.service("order"), kit.transport, kit.serde)

    def place(self, count: int, seed: int) -> list[str]:
        """Place ``count`` sample orders and return their ids."""
        return [
            place_order(self.publisher, self.shop.orders, request)
            for request in sample_orders(count, seed=seed)
        ]

    def tracker(self) -> Tracker:
        """Return a tracker fed with every record published so far."""
        tracker = Tracker(
            choreography=Choreography.from_services(self.shop.services, [OrderFulfillment])
        )
        tracker.feed_many(
            Record(r.topic, 0, n, r.key, r.value, tuple(r.headers))
            for n, r in enumerate(self.kit.published)
        )
        return tracker

    def paths(self) -> dict[str, Path]:
        """Return each service's SQLite file."""
        data_dir = self.shop.config.data_dir
        assert data_dir is not None
        return {name: data_dir / f"{name}.state.sqlite3" for name in SERVICE_NAMES}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """Yield the shop (20% declines, 10% failed dispatches) on a SagaTestKit."""
    config = ServiceConfig(seed=11, decline_rate=0.2, dispatch_failure_rate=0.1, data_dir=tmp_path)
    shop = build_shop(config)
    with SagaTestKit(shop.services, schemas_dir=REPO / "schemas", stores=memory_store) as kit:
        current = Run(shop, kit)
        yield current
        current.publisher.close()
    shop.close()


def test_the_choreography_checks_clean() -> None:
    """choreo's graph check finds no problem in the shop's declarations.

    The services also answer the orchestrated saga's commands, so its orchestrator is
    part of the shop's choreography.
    """
    from services.orchestrated import create

    shop = build_shop(ServiceConfig())
    services = [*shop.services, create().service]
    assert check(Choreography.from_services(services, [OrderFulfillment])) == []


def test_every_order_ends_with_the_declared_event_sequence(run: Run) -> None:
    """Each saga follows one of the four paths, matching the injected decisions."""
    order_ids = run.place(150, seed=11)
    run.kit.run_until_idle()
    config = run.shop.config
    paths = Counter()
    for order_id in order_ids:
        types = run.kit.event_types(order_id)
        if types == OUT_OF_STOCK:
            paths["out-of-stock"] += 1
        elif config.declines(order_id):
            assert types == DECLINED, order_id
            paths["declined"] += 1
        elif config.dispatch_fails(order_id):
            assert types == DISPATCH_FAILED, order_id
            paths["dispatch-failed"] += 1
        else:
            assert types == COMPLETED, order_id
            paths["completed"] += 1
    assert set(paths) == {"out-of-stock", "declined", "dispatch-failed", "completed"}
    assert run.kit.dead_letters() == []


def test_state_and_tracker_agree(run: Run) -> None:
    """The services' own state passes the audit and matches the tracker's counts."""
    order_ids = run.place(120, seed=12)
    run.kit.run_until_idle()
    report = audit(run.paths())
    assert report.ok, report.problems
    assert report.statuses["pending"] == 0
    counts = run.tracker().counts()
    assert counts[SagaStatus.COMPLETED] == report.statuses["completed"]
    assert counts[SagaStatus.FAILED] == report.statuses["failed"]
    assert counts[SagaStatus.COMPLETED] + counts[SagaStatus.FAILED] == len(order_ids)
    assert counts[SagaStatus.VIOLATED] == 0
    assert report.facts["refunds"] == report.facts["cancelled"]


def test_handling_every_event_again_changes_nothing(run: Run) -> None:
    """Workers that lost their inboxes handle every event again: the state does not move."""
    run.place(40, seed=13)
    run.kit.run_until_idle()
    before = audit(run.paths())
    with SagaTestKit(run.shop.services, schemas_dir=REPO / "schemas", stores=memory_store) as fresh:
        for record in list(run.kit.published):
            fresh.publish_raw(record.topic, record.value, key=record.key, headers=record.headers)
        handled = fresh.run_until_idle()
    assert handled >= len(run.kit.published)
    after = audit(run.paths())
    assert after.ok, after.problems
    assert (after.statuses, after.facts) == (before.statuses, before.facts)


def _time_out(run: Run) -> list[str]:
    """Let the tracker's TimeoutService see a minute pass; return the sagas it timed out."""
    tracker = run.tracker()
    codec = run.kit.serde.codec  # type: ignore[attr-defined]
    service = TimeoutService(tracker, run.kit.transport, codec.encode)
    try:
        sent = service.run_once(now_ms() + 60_000)
    finally:
        service.stop()
    return [envelope.correlation_id for envelope in sent]


@pytest.mark.parametrize(
    ("silent_step", "undone"),
    [
        ("inventory.reserve", []),
        ("payment.charge", ["shop.inventory.InventoryReleased"]),
        (
            "shipping.create_shipment",
            ["shop.payments.PaymentRefunded", "shop.inventory.InventoryReleased"],
        ),
        (
            "shipping.dispatch",
            [
                "shop.shipping.ShipmentCancelled",
                "shop.payments.PaymentRefunded",
                "shop.inventory.InventoryReleased",
            ],
        ),
    ],
)
def test_a_timeout_compensates_in_reverse_order(
    tmp_path: Path, silent_step: str, undone: list[str]
) -> None:
    """A silent step leaves the saga hanging; the tracker's timeout undoes exactly what was done."""
    config = ServiceConfig(silent_step=silent_step, silent_rate=1.0, data_dir=tmp_path)
    shop = build_shop(config)
    with SagaTestKit(shop.services, schemas_dir=REPO / "schemas", stores=memory_store) as kit:
        run = Run(shop, kit)
        (order_id,) = run.place(1, seed=14)
        kit.run_until_idle()
        assert audit(run.paths()).statuses["pending"] == 1
        assert _time_out(run) == [order_id]
        kit.run_until_idle()
        assert _time_out(run) == []  # a saga times out once
        types = kit.event_types(order_id)
        timeout_at = types.index("choreo.SagaTimedOut")
        assert types[timeout_at + 1 :] == [
            *undone,
            "shop.orders.OrderFailed",
            "shop.notifications.NotificationSent",
        ]
        report = audit(run.paths())
        assert report.ok, report.problems
        assert report.statuses["failed"] == 1
        trace = run.tracker().get(order_id)
        assert trace is not None and trace.status is SagaStatus.FAILED, trace
        run.publisher.close()
    shop.close()


def test_a_timeout_past_the_pivot_compensates_nothing(tmp_path: Path) -> None:
    """A saga stuck after the dispatch (the pivot) is not undone: it waits for a human."""
    config = ServiceConfig(silent_step="order.complete", silent_rate=1.0, data_dir=tmp_path)
    shop = build_shop(config)
    with SagaTestKit(shop.services, schemas_dir=REPO / "schemas", stores=memory_store) as kit:
        run = Run(shop, kit)
        (order_id,) = run.place(1, seed=15)
        kit.run_until_idle()
        assert _time_out(run) == [order_id]
        kit.run_until_idle()
        assert kit.event_types(order_id)[-2:] == [
            "shop.shipping.ShipmentDispatched",
            "choreo.SagaTimedOut",
        ]
        report = audit(run.paths())
        assert report.ok, report.problems
        assert report.statuses["pending"] == 1 and report.facts["dispatched"] == 1
        run.publisher.close()
    shop.close()
