"""The order-fulfilment choreography every peer implements: events, topics, outcomes, logic.

One place fixes what all implementations share, so the comparison measures frameworks:

- the event types (Avro full names, also the topic names) and which service consumes which;
- the outcome of each order, decided by a hash of its id (no randomness): about 2 % of
  reservations fail, 20 % of payments are declined, 5 % of dispatches fail;
- the per-step business logic: one dict update and the emitted datum (:func:`step`);
- the Avro writer schemas read from ``schemas/shop`` with fastavro, self-contained, with the
  CRC-64-AVRO fingerprints of the single-object encoding (``C3 01`` + 8 bytes + body);
- the start event's datum and the header names (choreo's envelope headers).

The choreo implementation uses choreo's own codec and typed events instead of the fastavro
helpers here; the tests check both produce the same bytes.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SCHEMAS_DIR: Final = REPO_ROOT / "schemas" / "shop"
SAGA: Final = "OrderFulfillment"

ORDER_CREATED: Final = "shop.orders.OrderCreated"
ORDER_COMPLETED: Final = "shop.orders.OrderCompleted"
ORDER_FAILED: Final = "shop.orders.OrderFailed"
INVENTORY_RESERVED: Final = "shop.inventory.InventoryReserved"
RESERVATION_FAILED: Final = "shop.inventory.InventoryReservationFailed"
INVENTORY_RELEASED: Final = "shop.inventory.InventoryReleased"
PAYMENT_CHARGED: Final = "shop.payments.PaymentCharged"
PAYMENT_DECLINED: Final = "shop.payments.PaymentDeclined"
PAYMENT_REFUNDED: Final = "shop.payments.PaymentRefunded"
SHIPMENT_CREATED: Final = "shop.shipping.ShipmentCreated"
SHIPMENT_DISPATCHED: Final = "shop.shipping.ShipmentDispatched"
DISPATCH_FAILED: Final = "shop.shipping.ShipmentDispatchFailed"
SHIPMENT_CANCELLED: Final = "shop.shipping.ShipmentCancelled"

EVENT_TYPES: Final = (
    ORDER_CREATED,
    INVENTORY_RESERVED,
    RESERVATION_FAILED,
    PAYMENT_CHARGED,
    PAYMENT_DECLINED,
    SHIPMENT_CREATED,
    SHIPMENT_DISPATCHED,
    DISPATCH_FAILED,
    SHIPMENT_CANCELLED,
    PAYMENT_REFUNDED,
    INVENTORY_RELEASED,
    ORDER_COMPLETED,
    ORDER_FAILED,
)
"""Every event type of the saga; each has its own topic of the same name."""

TERMINAL: Final = (ORDER_COMPLETED, ORDER_FAILED)

SUBSCRIPTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "inventory": (ORDER_CREATED, PAYMENT_DECLINED, PAYMENT_REFUNDED),
    "payment": (INVENTORY_RESERVED, SHIPMENT_CANCELLED),
    "shipping": (PAYMENT_CHARGED, SHIPMENT_CREATED, DISPATCH_FAILED),
    "order": (SHIPMENT_DISPATCHED, INVENTORY_RELEASED, RESERVATION_FAILED),
}
"""The event types each service consumes (one consumer per service)."""

# choreo's envelope header names (choreo.model.envelope.Header), written by every Kafka peer.
H_TYPE: Final = "choreo-type"
H_ID: Final = "choreo-id"
H_CID: Final = "choreo-correlation-id"
H_CAUSE: Final = "choreo-causation-id"
H_SAGA: Final = "choreo-saga"
H_ROLE: Final = "choreo-role"
H_SERVICE: Final = "choreo-service"
H_AT: Final = "choreo-produced-at"
H_STEP: Final = "choreo-step"

RESERVATION_FAILURE_PCT: Final = 2
DECLINE_PCT: Final = 20
DISPATCH_FAILURE_PCT: Final = 5

LINE_ITEMS: Final[tuple[dict[str, Any], ...]] = (
    {"sku": "SKU-00042", "quantity": 2, "unit_price_cents": 1999},
    {"sku": "SKU-00777", "quantity": 1, "unit_price_cents": 500},
)


# --- outcomes ----------------------------------------------------------------------------


def _bucket(order_id: str, salt: int) -> int:
    """Return a number in 0..99 decided by ``order_id`` alone (same in every process)."""
    return (zlib.crc32(order_id.encode()) // salt) % 100


def reservation_fails(order_id: str) -> bool:
    """Return True when the inventory cannot reserve ``order_id`` (about 2 %)."""
    return _bucket(order_id, 1) < RESERVATION_FAILURE_PCT


def payment_declined(order_id: str) -> bool:
    """Return True when the payment of ``order_id`` is declined (about 20 %)."""
    return _bucket(order_id, 100) < DECLINE_PCT


def dispatch_fails(order_id: str) -> bool:
    """Return True when the shipment of ``order_id`` cannot be dispatched (about 5 %)."""
    return _bucket(order_id, 10_000) < DISPATCH_FAILURE_PCT


def expected_outcome(order_id: str) -> str:
    """Return the saga's path for ``order_id``: reservation, declined, dispatch or completed."""
    if reservation_fails(order_id):
        return "reservation"
    if payment_declined(order_id):
        return "declined"
    if dispatch_fails(order_id):
        return "dispatch"
    return "completed"


EVENTS_PER_PATH: Final[Mapping[str, int]] = {
    "reservation": 3,  # OrderCreated, InventoryReservationFailed, OrderFailed
    "declined": 5,  # + InventoryReserved, PaymentDeclined, InventoryReleased
    "dispatch": 9,  # + PaymentCharged, ShipmentCreated, DispatchFailed, Cancelled, Refunded
    "completed": 6,  # OC, InventoryReserved, PaymentCharged, ShipmentCreated, Dispatched, done
}
"""How many events one saga of each path puts on Kafka (the start event included)."""

FINAL_STATES: Final[Mapping[str, Mapping[str, str]]] = {
    "reservation": {"inventory": "unavailable", "order": "failed"},
    "declined": {"inventory": "released", "payment": "declined", "order": "failed"},
    "dispatch": {
        "inventory": "released",
        "payment": "refunded",
        "shipping": "cancelled",
        "order": "failed",
    },
    "completed": {
        "inventory": "reserved",
        "payment": "charged",
        "shipping": "dispatched",
        "order": "completed",
    },
}
"""The value each service's state dict holds for an order at the end of each path."""


def expected_state_counts(order_ids: list[str]) -> dict[str, dict[str, int]]:
    """Return, per service, how many orders should end in each state."""
    counts: dict[str, dict[str, int]] = {}
    for order_id in order_ids:
        for service, state in FINAL_STATES[expected_outcome(order_id)].items():
            per = counts.setdefault(service, {})
            per[state] = per.get(state, 0) + 1
    return counts


def count_states(states: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, int]]:
    """Return per service how many orders its state dict holds in each state."""
    counts: dict[str, dict[str, int]] = {}
    for service, per_order in states.items():
        per: dict[str, int] = {}
        for state in per_order.values():
            per[state] = per.get(state, 0) + 1
        counts[service] = per
    return counts


# --- the business logic on dicts (raw, FastStream, DBOS) -----------------------------------

State = dict[str, str]
Step = Callable[[State, dict[str, Any]], tuple[str, dict[str, Any]]]


def reserve(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Inventory: reserve the order's items, or fail."""
    order_id = event["order_id"]
    if reservation_fails(order_id):
        state[order_id] = "unavailable"
        return RESERVATION_FAILED, {"order_id": order_id, "reason": "out of stock"}
    state[order_id] = "reserved"
    return INVENTORY_RESERVED, {
        "order_id": order_id,
        "reservation_id": "r-" + order_id,
        "items": event["items"],
    }


def release(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Inventory: release the reservation (compensates reserve)."""
    order_id = event["order_id"]
    state[order_id] = "released"
    return INVENTORY_RELEASED, {"order_id": order_id}


def charge(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Payment: charge the order's amount, or decline."""
    order_id = event["order_id"]
    if payment_declined(order_id):
        state[order_id] = "declined"
        return PAYMENT_DECLINED, {"order_id": order_id, "reason": "card declined"}
    state[order_id] = "charged"
    amount = sum(i["quantity"] * i["unit_price_cents"] for i in event["items"])
    return PAYMENT_CHARGED, {
        "order_id": order_id,
        "payment_id": "p-" + order_id,
        "amount_cents": amount,
    }


def refund(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Payment: refund the charge (compensates charge)."""
    order_id = event["order_id"]
    state[order_id] = "refunded"
    return PAYMENT_REFUNDED, {"order_id": order_id}


def create_shipment(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Shipping: create the shipment."""
    order_id = event["order_id"]
    state[order_id] = "created"
    return SHIPMENT_CREATED, {"order_id": order_id, "shipment_id": "s-" + order_id}


def dispatch(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Shipping: dispatch the shipment (the pivot), or fail."""
    order_id = event["order_id"]
    if dispatch_fails(order_id):
        state[order_id] = "undispatchable"
        return DISPATCH_FAILED, {"order_id": order_id, "reason": "carrier unavailable"}
    state[order_id] = "dispatched"
    return SHIPMENT_DISPATCHED, {"order_id": order_id, "tracking_number": "t-" + order_id}


def cancel(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Shipping: cancel the shipment (compensates create_shipment)."""
    order_id = event["order_id"]
    state[order_id] = "cancelled"
    return SHIPMENT_CANCELLED, {"order_id": order_id}


def complete(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Order: the order is complete."""
    order_id = event["order_id"]
    state[order_id] = "completed"
    return ORDER_COMPLETED, {"order_id": order_id}


def reject(state: State, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Order: the order failed (compensates the saga's start)."""
    order_id = event["order_id"]
    state[order_id] = "failed"
    return ORDER_FAILED, {"order_id": order_id, "reason": event.get("reason") or "compensated"}


HANDLERS: Final[Mapping[str, tuple[str, Step]]] = {
    ORDER_CREATED: ("inventory", reserve),
    PAYMENT_DECLINED: ("inventory", release),
    PAYMENT_REFUNDED: ("inventory", release),
    INVENTORY_RESERVED: ("payment", charge),
    SHIPMENT_CANCELLED: ("payment", refund),
    PAYMENT_CHARGED: ("shipping", create_shipment),
    SHIPMENT_CREATED: ("shipping", dispatch),
    DISPATCH_FAILED: ("shipping", cancel),
    SHIPMENT_DISPATCHED: ("order", complete),
    INVENTORY_RELEASED: ("order", reject),
    RESERVATION_FAILED: ("order", reject),
}
"""Consumed event type -> (service, step function), for the dict-based implementations."""


def order_created(order_id: str, index: int, created_at_ms: int) -> dict[str, Any]:
    """Return the OrderCreated datum (latest schema, v2) of the ``index``-th order."""
    return {
        "order_id": order_id,
        "customer_id": f"c-{index % 977:05d}",
        "items": [dict(item) for item in LINE_ITEMS],
        "total_cents": sum(i["quantity"] * i["unit_price_cents"] for i in LINE_ITEMS),
        "currency": "EUR",
        "created_at": created_at_ms,
        "coupon_code": None,
    }


# --- Avro with fastavro ------------------------------------------------------------------

_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\.v(?P<version>[0-9]+))?\.avsc$")
MARKER: Final = b"\xc3\x01"
HEADER_SIZE: Final = 10


@dataclass(frozen=True, slots=True)
class AvroType:
    """One event type's writer schema: parsed for fastavro, with its single-object prefix."""

    full_name: str
    parsed: Any
    prefix: bytes


def _latest_definitions(directory: Path) -> dict[str, dict[str, Any]]:
    """Return the latest version of every schema file under ``directory``, by full name."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for path in sorted(directory.rglob("*.avsc")):
        match = _FILE.match(path.name)
        if match is None:
            continue
        version = int(match["version"] or 1)
        definition = json.loads(path.read_text())
        namespace = definition.get("namespace")
        name = definition["name"]
        full = name if "." in name or not namespace else f"{namespace}.{name}"
        if full not in found or found[full][0] < version:
            found[full] = (version, definition)
    return {full: definition for full, (_, definition) in found.items()}


def _inline(  # noqa: PLR0911 - one return per shape of Avro schema
    schema: Any, named: Mapping[str, dict[str, Any]], defined: set[str]
) -> Any:
    """Return ``schema`` with references to other files' named types replaced by definitions.

    The first reference is replaced by the definition, later ones stay names (Avro's rule),
    so the result is self-contained, as the single-object fingerprint requires.
    """
    if isinstance(schema, str):
        if schema in named and schema not in defined:
            defined.add(schema)
            return _inline(named[schema], named, defined)
        return schema
    if isinstance(schema, list):
        return [_inline(s, named, defined) for s in schema]
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            name = schema["name"]
            namespace = schema.get("namespace")
            defined.add(name if "." in name or not namespace else f"{namespace}.{name}")
            fields = [{**f, "type": _inline(f["type"], named, defined)} for f in schema["fields"]]
            return {**schema, "fields": fields}
        if kind == "array":
            return {**schema, "items": _inline(schema["items"], named, defined)}
        if kind == "map":
            return {**schema, "values": _inline(schema["values"], named, defined)}
        if isinstance(kind, (dict, list)):
            return {**schema, "type": _inline(kind, named, defined)}
    return schema


def load_avro_types(directory: Path = SCHEMAS_DIR) -> dict[str, AvroType]:
    """Return the saga's event types' latest writer schemas, parsed, with their prefixes."""
    named = _latest_definitions(directory)
    types: dict[str, AvroType] = {}
    for full_name in EVENT_TYPES:
        whole = _inline(named[full_name], named, set())
        parsed = fastavro.parse_schema(whole, _write_hint=False)
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        types[full_name] = AvroType(full_name, fastavro.parse_schema(whole), MARKER + fp)
    return types


class AvroCodec:
    """Single-object encoding with fastavro's schemaless reader and writer (writer = reader)."""

    def __init__(self, types: Mapping[str, AvroType] | None = None) -> None:
        self.types = dict(types if types is not None else load_avro_types())
        self._by_prefix = {t.prefix: t for t in self.types.values()}

    def encode(self, event_type: str, datum: Mapping[str, Any]) -> bytes:
        """Return ``C3 01`` + fingerprint + the Avro body of ``datum``."""
        avro = self.types[event_type]
        out = io.BytesIO()
        out.write(avro.prefix)
        fastavro.schemaless_writer(out, avro.parsed, datum)
        return out.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return the writer's full name and the datum (KeyError for an unknown fingerprint)."""
        avro = self._by_prefix[data[:HEADER_SIZE]]
        source = io.BytesIO(data)
        source.seek(HEADER_SIZE)
        datum = fastavro.schemaless_reader(source, avro.parsed, None)
        return avro.full_name, datum  # type: ignore[return-value]  # records decode to dicts
