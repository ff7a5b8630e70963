"""JSON output (the viewer's API, the CLI's --format json) survives any string from data.

Strict parsing is the test: the bytes are ASCII, parse with :func:`json.loads`, and
every string in the result encodes as UTF-8 (no unpaired surrogate survives), while
characters outside the BMP come back unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreo.safety.jsonsafe import clean, dumps
from choreo.tracker.tracker import Tracker
from choreo.viewer.api import TraceApi, to_json

from .strategies import hostile_records, hostile_text, one_case


def strings_of(value: Any) -> list[str]:
    """Return every string (keys included) in a parsed JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_of(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings_of(v)]
    return []


def strict(raw: bytes) -> Any:
    """Parse ``raw`` as a strict consumer would: ASCII, valid JSON, valid Unicode strings."""
    text = raw.decode("ascii")
    value = json.loads(text)
    for string in strings_of(value):
        string.encode("utf-8")  # raises on an unpaired surrogate
    for bad in ("<", ">", "&"):
        assert bad not in text
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_dumps_is_strict_json(value: Any) -> None:
    """Any nested value dumps to strict JSON whose strings are the originals, cleaned."""
    with one_case("JSON values"):
        parsed = strict(dumps(value).encode("ascii"))
        if isinstance(value, str):
            assert parsed == clean(value)


def test_outside_the_bmp_and_lone_surrogates() -> None:
    """An emoji survives as itself; a lone surrogate becomes U+FFFD."""
    parsed = strict(to_json({"k\ud800": "\U0001f600\udc00x"}))
    assert parsed == {"k\ufffd": "\U0001f600\ufffdx"}


class JsonPayloads:
    """A decode function: payload bytes -> a dict holding them as a (hostile) string."""

    def __call__(self, raw: bytes) -> dict[str, Any]:
        return {"text": raw.decode("utf-8", "surrogatepass"), "raw": raw}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=hostile_records(), search=hostile_text)
def test_viewer_api_answers_strict_json(records: list, search: str) -> None:
    """Every view of the viewer's API over hostile records is strict JSON."""
    with one_case("viewer API", len(records)):
        tracker = Tracker(decode=JsonPayloads())
        tracker.feed_many(records)
        api = TraceApi(tracker)
        strict(to_json(api.summary()))
        strict(to_json(api.graph()))
        page = strict(to_json(api.sagas({"q": search[:200]})))
        for row in strict(to_json(api.sagas({})))["items"]:
            trace = tracker.get(row["correlation_id"])
            if trace is None:  # the id was cleaned of a lone surrogate: look it up as stored
                continue
            detail = strict(to_json(api.saga(trace.correlation_id)))
            for event in detail["events"]:
                payload = api.payload(trace.correlation_id, event["event_id"])
                strict(to_json(payload))
        assert isinstance(page["items"], list)
