"""The business-key index: which sagas carry a payload field's or a header's value."""

from __future__ import annotations

import json

import pytest

from choreo.model.envelope import Header
from choreo.tracker.keys import (
    MAX_FIELDS,
    MAX_LIST_ITEMS,
    MAX_VALUE_CHARS,
    KeyIndex,
    KeyQuery,
    parse_where,
)
from choreo.transports.base import Record


def record(cid: str, payload: object = None, **headers: str) -> Record:
    """Return a record of saga ``cid`` with a JSON payload and extra headers."""
    pairs = [(Header.CORRELATION_ID, cid.encode()), (Header.EVENT_ID, b"e-" + cid.encode())]
    pairs += [(name.replace("_", "-"), value.encode()) for name, value in headers.items()]
    body = None if payload is None else json.dumps(payload).encode()
    return Record("t", 0, 0, None, body, tuple(pairs))


def index(*records: Record, **options: object) -> KeyIndex:
    """Return an index (decoding JSON payloads) that has observed ``records``."""
    keys = KeyIndex(decode=json.loads, **options)  # type: ignore[arg-type]
    keys.observe(records)
    return keys


def test_payload_fields_by_path_and_last_name() -> None:
    """A nested field is found by its dotted path or its last name, case ignored."""
    keys = index(
        record("s1", {"order_id": "A-123", "customer": {"email": "Alice@Example.com"}}),
        record("s2", {"order_id": "A-124", "customer": {"email": "bob@example.com"}}),
    )
    assert keys.matching(KeyQuery.of(["order_id=a-123"])) == {"s1"}
    assert keys.matching(KeyQuery.of(["customer.email=alice@example.com"])) == {"s1"}
    assert keys.matching(KeyQuery.of(["email= ALICE@example.com "])) == {"s1"}
    assert keys.matching(KeyQuery.of(find="bob@example.com")) == {"s2"}
    assert keys.matching(KeyQuery.of(["mail=alice@example.com"])) == set()  # not a suffix
    assert keys.matching(KeyQuery.of(["order_id=A-12"])) == set()  # values match exactly


def test_conditions_must_all_hold_and_numbers_and_lists_are_indexed() -> None:
    """Several conditions intersect; numbers, booleans and list items are values too."""
    keys = index(
        record("s1", {"order_id": 123, "paid": True, "items": [{"sku": "X1"}, {"sku": "X2"}]}),
        record("s2", {"order_id": 123, "paid": False, "items": [{"sku": "X2"}]}),
    )
    assert keys.matching(KeyQuery.of(["order_id=123"])) == {"s1", "s2"}
    assert keys.matching(KeyQuery.of(["order_id=123", "paid=true"])) == {"s1"}
    assert keys.matching(KeyQuery.of(["items.sku=x1"])) == {"s1"}
    assert keys.matching(KeyQuery.of(["sku=X2"], find="false")) == {"s2"}
    assert keys.fields_of("s1", KeyQuery.of(["sku=x1"])) == ["items.sku"]


def test_business_headers_are_indexed_and_choreo_headers_are_not() -> None:
    """A custom header is a key by its lower-case name; choreo's own headers never are."""
    keys = index(record("s1", None, X_Tenant="ACME", traceparent="00-abc"))
    assert keys.matching(KeyQuery.of(["x-tenant=acme"])) == {"s1"}
    assert keys.matching(KeyQuery.of(find="e-s1")) == set()  # the event id header
    assert keys.matching(KeyQuery.of(find="00-abc")) == set()


def test_without_a_decoder_only_headers_count_and_bad_payloads_are_skipped() -> None:
    """No decode: payloads are ignored; an undecodable payload does not stop the rest."""
    plain = KeyIndex()
    plain.observe([record("s1", {"order_id": "A"}, X_Order="A")])
    assert plain.matching(KeyQuery.of(["order_id=a"])) == set()
    assert plain.matching(KeyQuery.of(["x-order=a"])) == {"s1"}
    broken = Record("t", 0, 1, None, b"\xff not json", ((Header.CORRELATION_ID, b"s2"),))
    keys = index(broken, record("s3", {"order_id": "B"}))
    assert keys.matching(KeyQuery.of(["order_id=b"])) == {"s3"}
    assert len(keys) == 1


def test_records_without_a_usable_correlation_id_are_skipped() -> None:
    """No correlation id, an empty one or one that is not UTF-8: nothing is indexed."""
    records = [
        Record("t", 0, 0, None, b"{}", (("x-a", b"1"),)),
        Record("t", 0, 1, None, b"{}", ((Header.CORRELATION_ID, b""), ("x-a", b"1"))),
        Record("t", 0, 2, None, b"{}", ((Header.CORRELATION_ID, b"\xff"), ("x-a", b"1"))),
    ]
    keys = index(*records)
    assert len(keys) == 0
    assert keys.matching(KeyQuery.of(["x-a=1"])) == set()


def test_bounds_on_values_fields_lists_and_depth() -> None:
    """Too long values, fields beyond the limit, list items beyond the limit, deep nesting."""
    many = {f"f{i:03d}": str(i) for i in range(MAX_FIELDS + 20)}
    deep: dict[str, object] = {"leaf": "deep-value"}
    for _ in range(10):
        deep = {"n": deep}
    keys = index(
        record("s1", {"long": "x" * (MAX_VALUE_CHARS + 1), "deep": deep}),
        record("s2", many),
        record("s3", {"items": [{"sku": f"k{i}"} for i in range(MAX_LIST_ITEMS + 5)]}),
    )
    assert keys.matching(KeyQuery.of(find="x" * MAX_VALUE_CHARS)) == set()
    assert keys.matching(KeyQuery.of(find="deep-value")) == set()
    assert len(keys.fields_of("s2", KeyQuery.of(find="1"))) <= 1
    found = sum(bool(keys.matching(KeyQuery.of([f"f{i:03d}={i}"]))) for i in range(len(many)))
    assert found == MAX_FIELDS
    assert keys.matching(KeyQuery.of(["sku=k0"])) == {"s3"}
    assert keys.matching(KeyQuery.of([f"sku=k{MAX_LIST_ITEMS}"])) == set()


def test_least_recently_seen_saga_is_forgotten_first() -> None:
    """Past max_sagas the saga seen least recently goes, and forgotten counts it."""
    keys = index(
        record("s1", {"k": "v1"}), record("s2", {"k": "v2"}), record("s1", {"k": "v1b"}),
        record("s3", {"k": "v3"}), max_sagas=2,
    )
    assert keys.forgotten == 1
    assert keys.matching(KeyQuery.of(["k=v2"])) == set()
    assert keys.matching(KeyQuery.of(["k=v1"])) == {"s1"}
    assert keys.matching(KeyQuery.of(["k=v3"])) == {"s3"}


def test_only_values_keeps_just_the_answer() -> None:
    """An index for one query keeps only the sagas holding its values."""
    keys = index(
        record("s1", {"order_id": "A"}), record("s2", {"order_id": "B"}), only_values={"b"}
    )
    assert len(keys) == 1
    assert keys.matching(KeyQuery.of(["order_id=b"])) == {"s2"}


def test_tee_passes_records_through_unchanged() -> None:
    """tee yields every record as it indexes it (a tracker and the index see the same)."""
    records = [record("s1", {"a": "1"}), record("s2", {"a": "2"})]
    keys = KeyIndex(decode=json.loads)
    assert list(keys.tee(records)) == records
    assert keys.matching(KeyQuery.of(["a=2"])) == {"s2"}


@pytest.mark.parametrize("text", ["order_id", "=123", "x" * 101 + "=1", "a=" + "v" * 201])
def test_malformed_conditions_say_what_to_write(text: str) -> None:
    """A condition without '=', without a field, or too long is refused with the fix."""
    with pytest.raises(ValueError, match=r"FIELD=VALUE|at most"):
        parse_where(text)


def test_too_many_conditions_are_refused() -> None:
    """A query holds a bounded number of conditions."""
    with pytest.raises(ValueError, match="at most 8"):
        KeyQuery.of([f"f{i}=v" for i in range(9)])
    assert not KeyQuery.of()
    assert KeyQuery.of(find="  ").find is None


def test_a_value_shared_by_sagas_survives_forgetting_some_of_them() -> None:
    """Sagas sharing a value: forgetting the oldest leaves the others found by it."""
    keys = index(
        *(record(f"s{i}", {"tenant": "acme", "n": str(i)}) for i in range(4)), max_sagas=2
    )
    assert keys.matching(KeyQuery.of(["tenant=acme"])) == {"s2", "s3"}
    keys.observe([record("s4", {"tenant": "other"})])
    assert keys.matching(KeyQuery.of(["tenant=acme"])) == {"s3"}
    keys.observe([record("s5", {"tenant": "other"})])
    assert keys.matching(KeyQuery.of(["tenant=acme"])) == set()
    assert keys.matching(KeyQuery.of(find="other")) == {"s4", "s5"}
    assert keys.forgotten == 4
