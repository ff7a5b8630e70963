"""Hypothesis strategies for hostile strings, timestamps and records, and a tally of cases."""

from __future__ import annotations

import contextlib
import resource
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Final

from hypothesis import strategies as st

from choreo.model.envelope import Header, Role
from choreo.safety.timestamps import MAX_MS, MIN_MS
from choreo.transports.base import Record

TRIED: Counter[str] = Counter()
"""How many hostile inputs each fuzz test tried (reported by conftest)."""

CASE_MEMORY_BYTES: Final = 64 * 1024 * 1024
"""How far one hostile case may raise the process's peak resident memory."""
CASE_SECONDS: Final = 10.0
"""The longest one hostile case may take."""


def _peak_rss() -> int:
    """Return the process's peak resident memory in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def one_case(surface: str, inputs: int = 1) -> Iterator[None]:
    """Count ``inputs`` hostile inputs for ``surface`` and hold the case to the memory and
    time limits: a case that raises the peak resident memory by more than
    :data:`CASE_MEMORY_BYTES` or runs longer than :data:`CASE_SECONDS` fails."""
    TRIED[surface] += inputs
    started, peak = time.monotonic(), _peak_rss()
    yield
    grown, elapsed = _peak_rss() - peak, time.monotonic() - started
    assert grown < CASE_MEMORY_BYTES, f"{surface}: one case grew the memory by {grown} bytes"
    assert elapsed < CASE_SECONDS, f"{surface}: one case took {elapsed:.1f} s"

CRAFTED: Final = [
    "[/x]",
    "[/]",
    "[bold red]loud[/bold red]",
    "[link=https://evil.example]click[/link]",
    "[" + str(uuid.UUID(int=7)) + "]",
    ":smile: :pile_of_poo:",
    "\x1b[31mred\x1b[0m",
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "\x1b]0;window title\x07",
    "line\rover",
    "back\x08\x08space",
    "\u202eevil\u202c",
    "\u2067rtl\u2069 \u200f",
    "\ud800",
    "\udfff lone low",
    "\U0001f600 outside the BMP \U0010ffff",
    "<script>alert(1)</script>",
    "</pre><img src=x onerror=alert(1)>",
    "&amp; &lt;",
    "{{7*7}} ${7*7} %s %n",
    "..",
    "../../etc/passwd",
    "a/b%2Fc d",
    "",
    " ",
    "\x00nul",
    "\u2028sep\u2029",
    "x" * 5000,
]
"""Hand-picked strings that broke or could break a renderer."""

ANY_CHAR: Final = st.characters(codec=None, categories=None)  # surrogates and controls too

hostile_text = st.one_of(
    st.sampled_from(CRAFTED),
    st.text(ANY_CHAR, max_size=40),
    st.lists(st.sampled_from(CRAFTED), min_size=1, max_size=3).map("".join),
)
"""A string a foreign producer could write: crafted attacks or arbitrary code points."""

hostile_ms = st.one_of(
    st.integers(min_value=MIN_MS, max_value=MAX_MS),
    st.sampled_from([MIN_MS - 1, MAX_MS + 1, -(10**30), 10**30, 2**63, -(2**63), 0, -1]),
    st.integers(),
)
"""Epoch milliseconds, valid or far outside the calendar."""


def utf8(text: str) -> bytes:
    """Return ``text`` as UTF-8, lone surrogates included (as a foreign producer may)."""
    return text.encode("utf-8", "surrogatepass")


@st.composite
def hostile_records(draw: st.DrawFn, max_records: int = 6) -> list[Record]:
    """Return records with choreo headers of hostile values (some valid, some broken)."""
    cids = draw(st.lists(hostile_text, min_size=1, max_size=3))
    records: list[Record] = []
    for offset in range(draw(st.integers(1, max_records))):
        cid = draw(st.sampled_from(cids))
        role = draw(st.one_of(st.sampled_from([r.value for r in Role]), hostile_text))
        fields = {
            Header.EVENT_TYPE: draw(hostile_text),
            Header.EVENT_ID: draw(hostile_text),
            Header.CORRELATION_ID: cid,
            Header.SAGA: draw(hostile_text),
            Header.ROLE: role,
            Header.SERVICE: draw(hostile_text),
            Header.PRODUCED_AT: str(draw(hostile_ms)),
            Header.STEP: draw(hostile_text),
        }
        if draw(st.booleans()):
            fields[Header.CAUSATION_ID] = draw(hostile_text)
        headers = [(name, utf8(value)) for name, value in fields.items()]
        if draw(st.integers(0, 9)) == 0:
            headers.append((draw(st.sampled_from(list(fields))), utf8(draw(hostile_text))))
        records.append(
            Record(
                topic=draw(st.sampled_from(["t", "shop.orders.OrderCreated", "[/t]"])),
                partition=0,
                offset=offset,
                key=utf8(cid),
                value=utf8(draw(hostile_text)),
                headers=tuple(headers),
                timestamp_ms=draw(st.integers(0, MAX_MS)),
            )
        )
    return records
