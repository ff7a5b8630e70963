"""Business-key search over hostile records and payloads: it never raises, and stays bounded."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreo.safety.jsonsafe import dumps
from choreo.tracker.keys import MAX_NAME_CHARS, MAX_VALUE_CHARS, KeyIndex, KeyQuery
from choreo.tracker.tracker import Tracker
from choreo.transports.base import Record
from choreo.viewer.api import BadQueryError, TraceApi

from .strategies import hostile_records, hostile_text, one_case, utf8

payloads = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=30,
)


def decode(raw: bytes) -> object:
    """Decode a JSON payload the way a tracker's decode would (and fail as one may)."""
    return json.loads(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=hostile_records(),
    payload=payloads,
    header=st.tuples(hostile_text, hostile_text),
    search=hostile_text,
)
def test_any_records_index_and_search_without_raising(
    records: list[Record], payload: object, header: tuple[str, str], search: str
) -> None:
    """Hostile headers, payloads and searches: no exception, bounded keys, escaped answers."""
    with one_case("key search", len(records)):
        body = dumps(payload, html_safe=False).encode()
        name, value = header
        fed = [
            Record(r.topic, r.partition, r.offset, r.key, body,
                   (*r.headers, (name, utf8(value))))
            for r in records
        ]
        keys = KeyIndex(decode=decode, max_sagas=5)
        tracker = Tracker(decode=decode)
        tracker.feed_many(keys.tee(fed))
        assert len(keys) <= 5
        for value_, fields in keys._by_value.items():
            assert len(value_) <= MAX_VALUE_CHARS
            assert all(len(path) <= MAX_NAME_CHARS for path in fields)
        text = search[:200]
        keys.matching(KeyQuery.of(find=text))
        api = TraceApi(tracker, keys)
        for q in (text, f"{name[:50]}={value[:100]}"):
            try:
                answer = api.sagas({"q": q})
            except BadQueryError as exc:  # refused, saying why: only for a malformed field=value
                assert "FIELD=VALUE" in str(exc) or "at most" in str(exc)
                continue
            encoded = dumps(answer)
            assert "<" not in encoded and ">" not in encoded
