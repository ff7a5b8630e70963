"""ServiceConfig: validation, environment round trip and deterministic decisions."""

from __future__ import annotations

import pytest

from choreo.errors import ConfigurationError
from services.catalog import DEFAULT_STOCK
from services.config import ServiceConfig, parse_stock


def test_decisions_are_deterministic_per_order_and_seed() -> None:
    """The same seed and order id always decide the same way; another seed may not."""
    config = ServiceConfig(seed=7, decline_rate=0.5)
    again = ServiceConfig(seed=7, decline_rate=0.5)
    orders = [f"o-{n}" for n in range(200)]
    first = [config.declines(o) for o in orders]
    assert first == [again.declines(o) for o in orders]
    other = [ServiceConfig(seed=8, decline_rate=0.5).declines(o) for o in orders]
    assert first != other


def test_rates_are_roughly_respected() -> None:
    """About the configured share of orders is declined or fails dispatch."""
    config = ServiceConfig(seed=1, decline_rate=0.2, dispatch_failure_rate=0.05)
    orders = [f"order-{n}" for n in range(5_000)]
    declined = sum(config.declines(o) for o in orders) / len(orders)
    failed = sum(config.dispatch_fails(o) for o in orders) / len(orders)
    assert 0.17 < declined < 0.23
    assert 0.035 < failed < 0.065


def test_decline_and_dispatch_decisions_are_independent() -> None:
    """Two kinds of decision for one order do not share a draw."""
    config = ServiceConfig(seed=3)
    orders = [f"o-{n}" for n in range(100)]
    assert [config.draw("decline", o) for o in orders] != [
        config.draw("dispatch", o) for o in orders
    ]


def test_zero_and_full_rates() -> None:
    """Rate 0 never decides yes, rate 1 always does."""
    never = ServiceConfig(decline_rate=0.0)
    always = ServiceConfig(decline_rate=1.0)
    assert not any(never.declines(f"o-{n}") for n in range(100))
    assert all(always.declines(f"o-{n}") for n in range(100))


def test_slow_and_silent_steps_apply_only_to_their_step() -> None:
    """A slow or silent step id affects that step and no other."""
    config = ServiceConfig(
        slow_step="payment.charge",
        slow_seconds=0.25,
        silent_step="shipping.dispatch",
        silent_rate=1.0,
    )
    assert config.delay_for("payment.charge", "o-1") == 0.25
    assert config.delay_for("inventory.reserve", "o-1") == 0.0
    assert config.is_silent("shipping.dispatch", "o-1")
    assert not config.is_silent("payment.charge", "o-1")


def test_intercept_sleeps_then_tells_whether_to_drop() -> None:
    """intercept() returns True only for the silent step."""
    config = ServiceConfig(silent_step="order.complete", silent_rate=1.0)
    assert config.intercept("order.complete", "o-1") is True
    assert config.intercept("payment.charge", "o-1") is False


def test_environment_round_trip(tmp_path: object) -> None:
    """to_env() and from_env() give back an equal configuration."""
    config = ServiceConfig(
        seed=42,
        decline_rate=0.2,
        dispatch_failure_rate=0.05,
        slow_step="payment.charge",
        slow_seconds=0.1,
        slow_rate=0.5,
        silent_step="shipping.dispatch",
        silent_rate=0.01,
        stock={"a": 1, "b": 2},
    )
    assert ServiceConfig.from_env(config.to_env()) == config


def test_from_empty_environment_gives_the_defaults() -> None:
    """Without SHOP_* variables the defaults apply, with the default stock."""
    config = ServiceConfig.from_env({})
    assert config == ServiceConfig()
    assert dict(config.stock) == dict(DEFAULT_STOCK)
    assert config.db_path("payment") == ":memory:"


@pytest.mark.parametrize(
    "changes",
    [{"decline_rate": 1.5}, {"silent_rate": -0.1}, {"slow_seconds": -1.0}, {"stock": {"x": -1}}],
)
def test_invalid_settings_are_rejected(changes: dict[str, object]) -> None:
    """Rates outside 0..1, negative delays and negative stock raise ConfigurationError."""
    with pytest.raises(ConfigurationError):
        ServiceConfig().with_changes(**changes)


def test_bad_environment_values_are_rejected() -> None:
    """A non-numeric rate or a malformed stock entry raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        ServiceConfig.from_env({"SHOP_DECLINE_RATE": "lots"})
    with pytest.raises(ConfigurationError):
        parse_stock("apple:3")
    assert parse_stock(" apple=3, pear=0 ,") == {"apple": 3, "pear": 0}
