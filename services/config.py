"""Failure injection and settings of the example services, from code or environment variables.

Every injected decision is deterministic per order: :meth:`ServiceConfig.decides` hashes the
seed, the kind of decision and the order id, so a service re-run after a crash (or a
redelivered event) decides exactly as the first time, and two runs with the same seed
produce the same outcomes.

Environment variables (all optional), read by :meth:`ServiceConfig.from_env`:

``SHOP_SEED``
    integer seed of every injected decision (default 0).
``SHOP_DECLINE_RATE``
    share of payments declined, 0..1 (default 0).
``SHOP_DISPATCH_FAILURE_RATE``
    share of shipment dispatches that fail, 0..1 (default 0).
``SHOP_SLOW_STEP`` / ``SHOP_SLOW_SECONDS`` / ``SHOP_SLOW_RATE``
    a step id (``payment.charge``) that sleeps ``SHOP_SLOW_SECONDS`` for a share
    ``SHOP_SLOW_RATE`` (default 1) of orders.
``SHOP_SILENT_STEP`` / ``SHOP_SILENT_RATE``
    a step id whose handler drops the event (does nothing, emits nothing) for a share of
    orders: those sagas can only end through their deadline (``choreo.SagaTimedOut``).
``SHOP_STOCK``
    initial stock of the inventory, ``sku=quantity,sku=quantity`` (default
    :data:`services.catalog.DEFAULT_STOCK`).
``SHOP_DATA_DIR``
    where a service keeps its own SQLite file when the runtime does not hand it a
    connection (default: an in-memory database).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from choreo import ConfigurationError
from services.catalog import DEFAULT_STOCK

__all__ = ["ServiceConfig", "parse_stock"]


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{name} must be between 0 and 1, not {value}")
    return value


def parse_stock(text: str) -> dict[str, int]:
    """Parse ``sku=quantity,sku=quantity`` into a dict; raise ConfigurationError when malformed."""
    stock: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        sku, sep, quantity = item.partition("=")
        if not sep or not sku.strip():
            raise ConfigurationError(f"stock entry {item!r} is not sku=quantity")
        try:
            stock[sku.strip()] = int(quantity)
        except ValueError as exc:
            raise ConfigurationError(f"stock entry {item!r}: {quantity!r} is not a number") from exc
    return stock


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the example services behave: injected failures, initial stock, state location."""

    seed: int = 0
    decline_rate: float = 0.0
    dispatch_failure_rate: float = 0.0
    slow_step: str | None = None
    slow_seconds: float = 0.0
    slow_rate: float = 1.0
    silent_step: str | None = None
    silent_rate: float = 0.0
    stock: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_STOCK))
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        """Reject rates outside 0..1 and negative delays at construction."""
        _rate("decline_rate", self.decline_rate)
        _rate("dispatch_failure_rate", self.dispatch_failure_rate)
        _rate("slow_rate", self.slow_rate)
        _rate("silent_rate", self.silent_rate)
        if self.slow_seconds < 0:
            raise ConfigurationError("slow_seconds must not be negative")
        if any(quantity < 0 for quantity in self.stock.values()):
            raise ConfigurationError("stock quantities must not be negative")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        """Return the configuration described by ``SHOP_*`` variables (see the module docs)."""
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError as exc:
                raise ConfigurationError(f"{name}={raw!r} is not a number") from exc

        stock_text = env.get("SHOP_STOCK", "").strip()
        data_dir = env.get("SHOP_DATA_DIR", "").strip()
        return cls(
            seed=int(number("SHOP_SEED", 0)),
            decline_rate=number("SHOP_DECLINE_RATE", 0.0),
            dispatch_failure_rate=number("SHOP_DISPATCH_FAILURE_RATE", 0.0),
            slow_step=env.get("SHOP_SLOW_STEP") or None,
            slow_seconds=number("SHOP_SLOW_SECONDS", 0.0),
            slow_rate=number("SHOP_SLOW_RATE", 1.0),
            silent_step=env.get("SHOP_SILENT_STEP") or None,
            silent_rate=number("SHOP_SILENT_RATE", 0.0),
            stock=parse_stock(stock_text) if stock_text else dict(DEFAULT_STOCK),
            data_dir=Path(data_dir) if data_dir else None,
        )

    def to_env(self) -> dict[str, str]:
        """Return the ``SHOP_*`` variables that :meth:`from_env` turns back into this config."""
        env = {
            "SHOP_SEED": str(self.seed),
            "SHOP_DECLINE_RATE": repr(self.decline_rate),
            "SHOP_DISPATCH_FAILURE_RATE": repr(self.dispatch_failure_rate),
            "SHOP_SLOW_SECONDS": repr(self.slow_seconds),
            "SHOP_SLOW_RATE": repr(self.slow_rate),
            "SHOP_SILENT_RATE": repr(self.silent_rate),
            "SHOP_STOCK": ",".join(f"{sku}={qty}" for sku, qty in self.stock.items()),
        }
        if self.slow_step:
            env["SHOP_SLOW_STEP"] = self.slow_step
        if self.silent_step:
            env["SHOP_SILENT_STEP"] = self.silent_step
        if self.data_dir is not None:
            env["SHOP_DATA_DIR"] = str(self.data_dir)
        return env

    def with_changes(self, **changes: object) -> ServiceConfig:
        """Return a copy with ``changes`` applied (validated like a new config)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # --- deterministic decisions ---------------------------------------------------

    def draw(self, kind: str, order_id: str) -> float:
        """Return a number in [0, 1) that depends only on the seed, ``kind`` and ``order_id``."""
        digest = hashlib.sha256(f"{self.seed}\x00{kind}\x00{order_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def decides(self, kind: str, order_id: str, rate: float) -> bool:
        """Return True for a share ``rate`` of order ids, the same answer on every call."""
        return rate > 0.0 and self.draw(kind, order_id) < rate

    def declines(self, order_id: str) -> bool:
        """Return whether the payment of ``order_id`` is declined."""
        return self.decides("decline", order_id, self.decline_rate)

    def dispatch_fails(self, order_id: str) -> bool:
        """Return whether the dispatch of ``order_id``'s shipment fails."""
        return self.decides("dispatch", order_id, self.dispatch_failure_rate)

    def delay_for(self, step_id: str, order_id: str) -> float:
        """Return how many seconds step ``step_id`` sleeps for ``order_id`` (0 when not slow)."""
        if step_id != self.slow_step or self.slow_seconds <= 0:
            return 0.0
        return self.slow_seconds if self.decides("slow", order_id, self.slow_rate) else 0.0

    def is_silent(self, step_id: str, order_id: str) -> bool:
        """Return whether step ``step_id`` drops the event of ``order_id`` without a trace."""
        return step_id == self.silent_step and self.decides("silent", order_id, self.silent_rate)

    def intercept(self, step_id: str, order_id: str) -> bool:
        """Apply the injected delay of ``step_id``; return True when it must drop the event."""
        delay = self.delay_for(step_id, order_id)
        if delay > 0:
            time.sleep(delay)
        return self.is_silent(step_id, order_id)

    def db_path(self, service: str) -> str:
        """Return the SQLite path of ``service``'s own state (``:memory:`` without a data dir).

        Used only when the runtime hands no connection (``ctx.db`` is None, e.g. a memory
        inbox or a concurrent worker); it is never the runtime's inbox file, whose write
        lock a batch holds while the handlers run.
        """
        if self.data_dir is None:
            return ":memory:"
        return str(self.data_dir / f"{service}.state.sqlite3")
