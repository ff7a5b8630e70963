"""Encode/decode throughput of one typical event: choreo's codecs versus raw fastavro.

Usage: ``python bench/bench_codec.py [--repeat N] [--seconds S] [--output PATH]``.

The event is an ``OrderCreated`` (v2, three line items). Each path is timed in the same
process, interleaved, with ``timeit`` (best of ``--repeat`` rounds of about ``--seconds``
each, so noise from neighbours on a shared machine inflates rather than flatters):

- ``raw fastavro``: ``schemaless_writer`` into a fresh ``BytesIO`` / ``schemaless_reader``
  from one, with the schema parsed once. It uses choreo's own schema (logical types are
  kept as raw ints, as choreo does); ``raw fastavro (logical)`` keeps ``timestamp-millis``
  so fastavro converts to ``datetime`` and back (reported, not used for ratios);
- ``SingleObjectCodec``: dict datum ↔ single-object bytes (header + validating body);
- ``EventSerde``: the generated ``OrderCreated`` dataclass ↔ bytes.

Ratios are throughput relative to raw fastavro (higher is better; the target is ≥ 0.8).
Results go to ``bench/results/codec.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
from fastavro import parse_schema, schemaless_reader, schemaless_writer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from choreo.avro import load_directory  # noqa: E402
from choreo.avro.codec import SingleObjectCodec  # noqa: E402 - after the sys.path tweak
from choreo.avro.jsonform import strip_logical_types  # noqa: E402
from choreo.avro.serde import EventSerde  # noqa: E402
from choreo.model.events import Event  # noqa: E402  # noqa: E402
from services import events as shop  # noqa: E402

ORDER = "shop.orders.OrderCreated"


def typical_event() -> shop.OrderCreated:
    """Return an OrderCreated with three line items."""
    return shop.OrderCreated(
        order_id="ord-7f3a9c2e-0001",
        customer_id="cust-000042",
        items=tuple(
            shop.LineItem(sku=f"SKU-{1000 + i}", quantity=i + 1, unit_price_cents=1999 * (i + 1))
            for i in range(3)
        ),
        total_cents=11994,
        currency="EUR",
        created_at=1_700_000_000_000,
        coupon_code=None,
    )


def best_us(function: Callable[[], Any], repeat: int, seconds: float) -> float:
    """Return the best time of one call in microseconds."""
    timer = timeit.Timer(function)
    number, elapsed = timer.autorange()
    number = max(1, int(number * seconds / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main() -> None:
    """Time every path, print a table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "codec.json")
    args = parser.parse_args()

    registry = load_directory(REPO / "schemas")
    version = registry.get(ORDER)
    codec = SingleObjectCodec(registry)
    classes = [
        c
        for c in vars(shop).values()
        if isinstance(c, type) and issubclass(c, Event) and c is not Event
    ]
    serde = EventSerde(codec, classes)
    event = typical_event()
    datum = shop_datum = codec.decode(serde.encode(event), ORDER)
    plain = parse_schema(strip_logical_types(version.schema))
    logical = parse_schema(version.schema)

    def raw_encode(schema: Any = plain) -> bytes:
        out = io.BytesIO()
        schemaless_writer(out, schema, datum)
        return out.getvalue()

    body = raw_encode()
    framed = codec.encode(ORDER, datum)
    assert framed[10:] == body, "choreo and fastavro must produce the same body"
    assert serde.decode(ORDER, framed) == event
    logical_datum = schemaless_reader(io.BytesIO(body), logical, None)

    def raw_encode_logical() -> bytes:
        out = io.BytesIO()
        schemaless_writer(out, logical, logical_datum)
        return out.getvalue()

    cases: dict[str, Callable[[], Any]] = {
        "encode raw fastavro": raw_encode,
        "encode SingleObjectCodec": lambda: codec.encode(ORDER, shop_datum),
        "encode EventSerde": lambda: serde.encode(event),
        "encode raw fastavro (logical)": raw_encode_logical,
        "decode raw fastavro": lambda: schemaless_reader(io.BytesIO(body), plain, None),
        "decode SingleObjectCodec": lambda: codec.decode(framed, ORDER),
        "decode EventSerde": lambda: serde.decode(ORDER, framed),
        "decode raw fastavro (logical)": lambda: schemaless_reader(io.BytesIO(body), logical, None),
    }
    timings = {name: best_us(fn, args.repeat, args.seconds) for name, fn in cases.items()}
    results: dict[str, Any] = {
        "event": f"{ORDER} v{version.version}, 3 line items, {len(framed)} bytes framed",
        "python": platform.python_version(),
        "fastavro": fastavro.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "us_per_op": {k: round(v, 3) for k, v in timings.items()},
        "ops_per_s": {k: round(1e6 / v) for k, v in timings.items()},
        "ratio_vs_raw": {},
    }
    print(f"{'path':<32}{'µs/op':>9}{'ops/s':>11}{'x raw':>8}")
    for name, us in timings.items():
        side = name.split()[0]
        raw = timings[f"{side} raw fastavro"]
        ratio = raw / us
        if "raw" not in name:
            results["ratio_vs_raw"][name] = round(ratio, 3)
        print(f"{name:<32}{us:>9.2f}{1e6 / us:>11,.0f}{ratio:>8.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output.relative_to(REPO)}")


if __name__ == "__main__":
    main()
