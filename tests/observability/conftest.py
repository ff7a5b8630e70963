"""Fixtures of the observability tests: the example shop on a SagaTestKit, metric parsing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo.testing import SagaTestKit
from services.config import ServiceConfig
from services.shop import Shop, build_shop

from .shop import REPO, ShopRun


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    """Yield the five example services (20% declines, 10% failed dispatches)."""
    config = ServiceConfig(seed=7, decline_rate=0.2, dispatch_failure_rate=0.1, data_dir=tmp_path)
    built = build_shop(config)
    yield built
    built.close()


@pytest.fixture
def shop_run(shop: Shop) -> Iterator[ShopRun]:
    """Yield the shop on a SagaTestKit (memory bus), with a publisher of orders."""
    with SagaTestKit(shop.services, schemas_dir=REPO / "schemas") as kit:
        run = ShopRun(shop, kit)
        yield run
        run.close()
