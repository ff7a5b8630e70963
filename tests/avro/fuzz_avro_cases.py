"""Hypothesis fuzz targets for the Avro layer, run in a child process under hard limits.

Usage: ``python fuzz_avro_cases.py TARGET EXAMPLES`` prints one JSON object: how many
inputs were tried per outcome, and the failures (an exception outside the contract, a
case over the time limit). The parent (``test_avro_fuzz.py``) sets no limits itself: this
process caps its own address space (``RLIMIT_AS``) before importing anything heavy, and
every case runs under a ``SIGALRM`` timer, so a hang or a runaway allocation is a
reported failure and a crash is a non-zero exit status.

Targets:

- ``codec``: random and mutated single-object payloads through ``SingleObjectCodec``
  (only ``DecodeError`` may come out);
- ``schemas``: random schema JSON through the parser, the limits and the compiler, then
  fastavro-generated data (the oracle) and mutations of it through the compiled decoder;
- ``container``: random, crafted and mutated export files through the container reader;
- ``registry``: random schema text as a Confluent registry answer, through ``ConfluentCodec``.
"""

from __future__ import annotations

import resource
import signal
import sys

MEMORY_LIMIT = 2 << 30
CASE_SECONDS = 5.0

if __name__ == "__main__":  # before the heavy imports: they count against the limit too
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import fastavro  # noqa: E402
import fastavro.utils  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from avro_files import SYNC, block, export_file, exported_record, header, zigzag  # noqa: E402

from choreo.avro import load_directory  # noqa: E402
from choreo.avro.codec import _DECODE_ERRORS, SingleObjectCodec  # noqa: E402
from choreo.avro.compiler import compile_decoder, compile_encoder  # noqa: E402
from choreo.avro.container import read_blocks  # noqa: E402
from choreo.avro.jsonform import to_json  # noqa: E402
from choreo.avro.parse import parse_schema  # noqa: E402
from choreo.errors import DecodeError, SchemaError  # noqa: E402
from choreo.tracker.sources import ACCEPTED_EXPORT_SCHEMAS, EXPORT_SCHEMA  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUTCOMES: Counter[str] = Counter()
FAILURES: list[str] = []


class CaseTimeout(BaseException):
    """A case ran over CASE_SECONDS (BaseException: no ``except Exception`` swallows it)."""


def _alarm(signum: int, frame: object) -> None:
    raise CaseTimeout


def run_case(name: str, case: Callable[[], str]) -> None:
    """Run one case under the timer; record its outcome, or the failure."""
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        OUTCOMES[f"{name}: {case()}"] += 1
    except CaseTimeout:
        FAILURES.append(f"{name}: over {CASE_SECONDS} s")
    except BaseException:  # anything else is outside the contract
        FAILURES.append(f"{name}: {traceback.format_exc(limit=6)}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# --- strategies ----------------------------------------------------------------------------

NAMES = st.sampled_from(["A", "B", "C", "x.A", "x.B", "y.A"] * 3 + ["1A", "", "x..A", "None"])
PRIMS = st.sampled_from(
    ["null", "boolean", "int", "long", "float", "double", "bytes", "string", "A", "x.B", "?"]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6,
)


def _complex(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    field = st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c", "d", "e", "class", "1x"]), "type": children},
        optional={"default": JSON_VALUES, "aliases": st.lists(NAMES, max_size=2)},
    )
    named = {"name": NAMES}
    optional = {"namespace": NAMES, "aliases": st.lists(NAMES, max_size=2), "doc": st.text()}
    return st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["record", "error"]),
                **named,
                "fields": st.lists(field, max_size=4),
            },
            optional=optional,
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("enum"),
                **named,
                "symbols": st.lists(st.sampled_from(["X", "Y", "Z", "1"]), max_size=4),
            },
            optional={"default": st.sampled_from(["X", "Q"]), **optional},
        ),
        st.fixed_dictionaries(
            {"type": st.just("fixed"), **named, "size": st.integers(-1, 12)}, optional=optional
        ),
        st.fixed_dictionaries({"type": st.just("array"), "items": children}),
        st.fixed_dictionaries({"type": st.just("map"), "values": children}),
        st.lists(children, max_size=4),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["int", "long", "bytes", "string"]),
                "logicalType": st.sampled_from(["date", "timestamp-millis", "decimal", "uuid"]),
            }
        ),
    )


SCHEMAS = st.recursive(PRIMS, _complex, max_leaves=20)
RAW_JSON = st.one_of(SCHEMAS, JSON_VALUES)
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "insert", "varint"]),
        st.integers(0, 1 << 16),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)
BIG = st.sampled_from([0, 1, -1, 2**31, -(2**31), 2**40, 2**63 - 1, -(2**63), 127, 128])


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    """Return ``data`` with bytes flipped, cut, inserted, or a varint forged in."""
    out = bytearray(data)
    for kind, position, value in mutations:
        at = position % (len(out) + 1)
        if kind == "flip" and out:
            out[at % len(out)] ^= value or 1
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value])
        else:
            out[at:at] = zigzag(value * 2**24 - 2**31)
    return bytes(out)


# --- targets -----------------------------------------------------------------------------


def codec_target(examples: int) -> None:
    registry = load_directory(REPO / "schemas")
    codec = SingleObjectCodec(registry)
    names = registry.names()
    valid = [
        codec.encode(v.full_name, fastavro.utils.generate_one(_plain(v.schema)), v.version)
        for v in registry
    ]

    def decode(data: bytes, reader: str) -> str:
        try:
            codec.decode_any(data)
            codec.decode(data, reader)
        except DecodeError:
            return "DecodeError"
        return "decoded"

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        st.integers(0, len(valid) - 1), MUTATIONS, st.binary(max_size=64), st.sampled_from(names)
    )
    def fuzz(index: int, mutations: list[tuple[str, int, int]], noise: bytes, reader: str) -> None:
        base = valid[index]
        run_case("mutated payload", lambda: decode(mutate(base, mutations), reader))
        run_case("random body", lambda: decode(base[:10] + noise, reader))
        run_case("random bytes", lambda: decode(noise, reader))

    fuzz()


def _plain(schema: Any) -> Any:
    """Return ``schema`` without logical types, parsed by fastavro."""
    return fastavro.parse_schema(to_json(parse_schema(schema), logical=False))


def _reuse_bomb(levels: int, width: int) -> Any:
    """Return a record whose ``width`` fields all use the next level's record (small JSON)."""
    schema: Any = "long"
    for i in reversed(range(levels)):
        ref = f"x.R{i + 1}" if i + 1 < levels else "long"
        fields = [{"name": f"f{j}", "type": schema if j == 0 else ref} for j in range(width)]
        schema = {"type": "record", "name": f"R{i}", "namespace": "x", "fields": fields}
    return schema


def schema_target(examples: int) -> None:
    def compile_and_run(
        raw: Any, noise: bytes, mutations: list[tuple[str, int, int]], keep: list[bool]
    ) -> str:
        try:
            model = parse_schema(raw)
            decoder = compile_decoder(model)
            encoder = compile_encoder(model)
        except SchemaError:
            return "SchemaError"
        try:
            plain = fastavro.parse_schema(to_json(model, logical=False))
        except Exception:  # fastavro refuses some schemas choreo accepts: no oracle
            return "compiled, no oracle"
        datum = fastavro.utils.generate_one(plain)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, plain, datum)
        body = buffer.getvalue()
        mine = bytearray()
        encoder(datum, mine)
        expected = fastavro.schemaless_reader(io.BytesIO(body), plain)
        # an ambiguous datum (say {} for a union of two empty records) may pick another
        # branch than fastavro's writer: compare what the bytes mean, not the bytes
        # (fastavro's writer ignores a dict's extra keys, so it may pick a record where the
        # datum was made for a map: then the datum itself is the reference)
        back = fastavro.schemaless_reader(io.BytesIO(bytes(mine)), plain)
        if not (_same(back, expected) or _same(back, datum)):
            return _fail("encoder differs from fastavro", raw, datum)
        if not _same(decoder(body, 0), expected):
            return _fail("decoder differs from fastavro", raw, datum)
        for data in (noise, mutate(body, mutations)):
            with contextlib.suppress(*_DECODE_ERRORS):
                decoder(data, 0)
        return _older_reader(raw, model, plain, body, keep)

    def _older_reader(raw: Any, model: Any, plain: Any, body: bytes, keep: list[bool]) -> str:
        """Read with the writer minus some top-level fields (an older reader), as fastavro."""
        written = to_json(model)
        if not isinstance(written, dict) or written.get("type") not in ("record", "error"):
            return "oracle agrees"
        fields = written["fields"]
        kept = [f for f, k in zip(fields, (keep * len(fields))[: len(fields)], strict=True) if k]
        older = {**written, "fields": kept}
        try:
            reader = parse_schema(older)
            plain_reader = fastavro.parse_schema(to_json(reader, logical=False))
        except Exception:  # a dropped field held the definition of a type used later
            return "oracle agrees, older reader invalid"
        expected = fastavro.schemaless_reader(io.BytesIO(body), plain, plain_reader)
        if not _same(compile_decoder(model, reader)(body, 0), expected):
            return _fail("older reader differs from fastavro", raw, older)
        return "oracle agrees, older reader too"

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(RAW_JSON, st.binary(max_size=32), MUTATIONS, st.lists(st.booleans(), min_size=1))
    @example(
        {"type": "array", "items": {"type": "array", "items": "null"}},
        b"\xfe\xff\xff\xff\x0f",
        [("cut", 0, 0)],
        [True],
    )
    @example(_reuse_bomb(7, 7), b"", [("cut", 0, 0)], [True])  # 1 GiB+ before the limits
    def fuzz(
        raw: Any, noise: bytes, mutations: list[tuple[str, int, int]], keep: list[bool]
    ) -> None:
        run_case("schema", lambda: compile_and_run(raw, noise, mutations, keep))

    fuzz()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):  # float32 rounding allowed
        return math.isclose(a, b, rel_tol=1e-6) or a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _fail(what: str, raw: Any, datum: Any) -> str:
    FAILURES.append(f"{what}: {json.dumps(raw)[:400]} datum {datum!r:.200}")
    return what


def container_target(examples: int) -> None:
    valid = [export_file(3, deflate=False), export_file(40, deflate=True)]

    def read(data: bytes) -> str:
        try:
            sum(len(b) for b in read_blocks(io.BytesIO(data), ACCEPTED_EXPORT_SCHEMAS))
        except DecodeError:
            return "DecodeError"
        return "read"

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.sampled_from(valid), MUTATIONS, RAW_JSON, st.tuples(BIG, BIG, st.binary(max_size=64)))
    def fuzz(
        base: bytes,
        mutations: list[tuple[str, int, int]],
        schema: Any,
        forged: tuple[int, int, bytes],
    ) -> None:
        count, size, noise = forged
        crafted = header(EXPORT_SCHEMA) + zigzag(count) + zigzag(size) + noise + SYNC
        run_case("mutated export file", lambda: read(mutate(base, mutations)))
        run_case("forged block", lambda: read(crafted))
        run_case("foreign schema", lambda: read(header(schema) + block(1, exported_record(0))))
        run_case("random bytes", lambda: read(b"Obj\x01" + noise))

    fuzz()


def registry_target(examples: int) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from choreo.avro.confluent import ConfluentCodec

    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    codec = ConfluentCodec(client, load_directory(REPO / "schemas"))

    def answer(text: str, body: bytes) -> str:
        schema_id = client.register_schema(f"s{uuid.uuid4().hex}", Schema(text, "AVRO"))
        try:
            codec.decode_any(b"\x00" + schema_id.to_bytes(4, "big") + body)
        except DecodeError:
            return "DecodeError"
        return "decoded"

    texts = st.one_of(RAW_JSON.map(json.dumps), st.text(max_size=40))

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(texts, st.binary(max_size=16))
    def fuzz(text: str, body: bytes) -> None:
        run_case("registry answer", lambda: answer(text, body))

    fuzz()


TARGETS = {
    "codec": codec_target,
    "schemas": schema_target,
    "container": container_target,
    "registry": registry_target,
}


def main() -> None:
    target, examples = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGALRM, _alarm)
    TARGETS[target](examples)
    print(json.dumps({"outcomes": dict(OUTCOMES), "failures": FAILURES[:20]}))


if __name__ == "__main__":
    main()
