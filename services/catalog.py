"""The shop's catalogue and a deterministic generator of sample orders for demos and tests.

Orders are drawn from a seeded random generator, so the same ``(count, seed)`` always
yields the same orders with the same ids. A small share asks for the scarce
:data:`LIMITED_SKU`, of which only a handful are in stock: those orders run out of stock.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_STOCK",
    "LIMITED_SKU",
    "PRICES",
    "OrderLine",
    "OrderRequest",
    "sample_orders",
]

LIMITED_SKU: Final = "sku-limited-edition"
"""The scarce article: orders of it run out of stock after a handful of reservations."""

PRICES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "sku-coffee-beans": 1_450,
        "sku-grinder": 8_900,
        "sku-kettle": 4_500,
        "sku-mug": 1_200,
        "sku-filter-papers": 350,
        LIMITED_SKU: 24_900,
    }
)
"""Unit prices in cents."""

DEFAULT_STOCK: Final[Mapping[str, int]] = MappingProxyType(
    {sku: (3 if sku == LIMITED_SKU else 1_000_000) for sku in PRICES}
)
"""The inventory's initial stock when nothing else is configured."""

LIMITED_SHARE: Final = 0.04
"""Share of sample orders that ask for the scarce article."""


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line of an order: an article, how many, and the unit price in cents."""

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order a customer places: what the order service stores and announces."""

    order_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    currency: str = "EUR"

    @property
    def total_cents(self) -> int:
        """Return the order's total in cents."""
        return sum(line.quantity * line.unit_price_cents for line in self.lines)


def sample_orders(count: int, *, seed: int = 0, prefix: str = "order") -> list[OrderRequest]:
    """Return ``count`` orders drawn deterministically from ``seed`` (ids ``prefix-seed-n``)."""
    rng = random.Random(seed)
    common = [sku for sku in PRICES if sku != LIMITED_SKU]
    orders: list[OrderRequest] = []
    for number in range(count):
        if rng.random() < LIMITED_SHARE:
            skus = [LIMITED_SKU]
        else:
            skus = rng.sample(common, rng.randint(1, 3))
        lines = tuple(OrderLine(sku, rng.randint(1, 3), PRICES[sku]) for sku in skus)
        orders.append(
            OrderRequest(
                order_id=f"{prefix}-{seed}-{number:06d}",
                customer_id=f"customer-{rng.randint(1, max(1, count // 3)):05d}",
                lines=lines,
            )
        )
    return orders
