"""The whole example shop in one object: the five services and their stores, from one config.

``choreo run services.payment:service`` runs one module-level service (configured from
``SHOP_*`` variables); :func:`build_shop` builds all five for one process (``choreo demo``,
tests), each bound to its own store, so two shops never share state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from choreo import Service
from services import inventory, notification, order, payment, shipping
from services.config import ServiceConfig

__all__ = ["SERVICE_NAMES", "Shop", "build_shop"]

SERVICE_NAMES: Final = ("order", "inventory", "payment", "shipping", "notification")
"""The services of the shop, in the order a saga meets them."""


@dataclass(frozen=True, slots=True)
class Shop:
    """The five services of the shop and the stores their handlers write to."""

    config: ServiceConfig
    orders: order.Orders
    stock: inventory.Stock
    ledger: payment.Ledger
    shipments: shipping.Shipments
    notifications: notification.Outbox
    services: tuple[Service, ...]

    def service(self, name: str) -> Service:
        """Return the service called ``name``; raise KeyError for an unknown one."""
        for candidate in self.services:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def close(self) -> None:
        """Close the stores' own connections."""
        for store in (self.orders, self.stock, self.ledger, self.shipments, self.notifications):
            store.close()


def build_shop(config: ServiceConfig | None = None) -> Shop:
    """Return the five services built from ``config`` (``SHOP_*`` variables when None)."""
    config = config or ServiceConfig.from_env()
    orders = order.Orders(config.db_path("order"))
    stock = inventory.Stock(config.db_path("inventory"), stock=config.stock)
    ledger = payment.Ledger(config.db_path("payment"))
    shipments = shipping.Shipments(config.db_path("shipping"))
    outbox = notification.Outbox(config.db_path("notification"))
    services = (
        order.create(config, orders=orders),
        inventory.create(config, stock=stock),
        payment.create(config, ledger=ledger),
        shipping.create(config, shipments=shipments),
        notification.create(config, outbox=outbox),
    )
    return Shop(config, orders, stock, ledger, shipments, outbox, services)
