"""Every terminal renderer survives hostile strings and timestamps and shows them as text.

The tables, trees and command outputs are rendered with hypothesis-drawn ids, names,
payload fields and times: nothing may raise, no control or bidi character from data may
reach the terminal, and markup-looking data (``[/x]``, ``[link=…]``, bracketed UUIDs) is
shown literally.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreo.cli import main
from choreo.model.envelope import Role
from choreo.safety.terminal import console
from choreo.safety.text import printable
from choreo.safety.timestamps import MAX_MS, MIN_MS, format_ms, valid_ms
from choreo.tracker.model import SagaTrace, TraceEvent, Violation
from choreo.tracker.render import findings_table, sagas_table, trace_tree
from choreo.tracker.sources import write_container_file
from choreo.tracker.verify import Finding

from .strategies import CRAFTED, hostile_ms, hostile_records, hostile_text, one_case

# what may reach the terminal: no C0/C1 control but newline, no bidi control, no surrogate
_UNSAFE_OUTPUT = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                            "\u2066-\u2069\u2028\u2029\ud800-\udfff]")


def render(renderable: object) -> str:
    """Return what the CLI's console prints for ``renderable`` on a wide, colourless terminal."""
    out = io.StringIO()
    console(file=out, width=4000).print(renderable)
    return out.getvalue()


@st.composite
def traces(draw: st.DrawFn) -> SagaTrace:
    """Return a saga trace whose every string and time is drawn from hostile values."""
    events = [
        TraceEvent(
            event_id=draw(hostile_text),
            event_type=draw(hostile_text),
            role=draw(st.sampled_from(list(Role))),
            service=draw(hostile_text),
            produced_at_ms=draw(hostile_ms),
            causation_id=draw(st.none() | hostile_text),
            step=draw(st.none() | hostile_text),
            topic=draw(hostile_text),
            partition=draw(st.integers(-1, 10)),
            offset=draw(st.integers(-1, 2**63 - 1)),
            late=draw(st.booleans()),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    violations = [
        Violation(draw(hostile_text), draw(hostile_text), draw(st.none() | hostile_text))
        for _ in range(draw(st.integers(0, 2)))
    ]
    return SagaTrace(
        correlation_id=draw(hostile_text),
        saga=draw(hostile_text),
        events=events,
        violations=violations,
        deadline_ms=draw(st.none() | hostile_ms),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trace=traces(), payload=st.dictionaries(hostile_text, hostile_text | hostile_ms, max_size=3)
)
def test_tables_and_trees_render_any_data_as_text(
    trace: SagaTrace, payload: dict[str, object]
) -> None:
    """sagas_table, trace_tree and findings_table never raise nor pass a control character."""
    with one_case("terminal renderers"):
        findings = [Finding(trace.correlation_id, trace.saga, v) for v in trace.violations]
        for renderable in (
            sagas_table([trace]),
            sagas_table([trace], width=80),
            trace_tree(trace, payload=lambda _event: payload, expecting=[trace.saga]),
            findings_table(findings),
            findings_table(findings, width=80),
        ):
            output = render(renderable)
            assert _UNSAFE_OUTPUT.search(output) is None, output
        shown = render(trace_tree(trace))
        assert printable(trace.correlation_id) in shown


def test_markup_in_data_is_shown_literally() -> None:
    """Markup-looking data is shown as typed: no MarkupError, no style, no lost brackets."""
    uuid_id = "[" + "12345678-1234-5678-1234-567812345678" + "]"
    for text in ("[/x]", "[link=https://evil.example]click[/link]", uuid_id, ":smile:"):
        trace = SagaTrace(correlation_id=text, saga=text)
        assert text in render(sagas_table([trace]))
        assert text in render(trace_tree(trace))


@settings(max_examples=500, deadline=None)
@given(ms=hostile_ms)
def test_any_timestamp_formats(ms: int) -> None:
    """Every int formats; a time within years 1-9999 as a date, any other as invalid."""
    with one_case("timestamps"):
        text = format_ms(ms)
        if MIN_MS <= ms <= MAX_MS:
            assert valid_ms(ms) and text[4] == "-" and len(text) == 23
        else:
            assert text.startswith("invalid time")


def test_timestamps_at_the_edges() -> None:
    """The calendar's first and last millisecond are dates; one beyond is invalid."""
    assert format_ms(MIN_MS) == "0001-01-01 00:00:00.000"
    assert format_ms(MAX_MS) == "9999-12-31 23:59:59.999"
    assert format_ms(MAX_MS + 1).startswith("invalid time")
    assert format_ms(-(10**40)) == "invalid time (-" + "1" + "0" * 22 + "… ms)"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(records=hostile_records())
def test_commands_survive_hostile_records(tmp_path: Path, records: list) -> None:
    """sagas, trace, verify and watch --once over a file of hostile records: no crash."""
    with one_case("CLI commands", len(records)):
        path = tmp_path / "hostile.avro"
        write_container_file(path, records)
        runner = CliRunner()
        env = {"COLUMNS": "300"}
        cid = records[0].key.decode("utf-8", "surrogatepass") if records[0].key else "x"
        for args in (
            ["sagas", "--file", str(path)],
            ["verify", "--file", str(path)],
            ["watch", "--once", "--file", str(path)],
            ["trace", "--file", str(path), "--", cid[:50] or "x"],  # an id may start with "-"
        ):
            result = runner.invoke(main, args, env=env)
            assert result.exit_code in (0, 1), (args, result.output, result.exception)
            if result.exception is not None:
                assert isinstance(result.exception, SystemExit), result.exception
            assert _UNSAFE_OUTPUT.search(result.output) is None, result.output


def test_the_crafted_strings_are_escaped() -> None:
    """printable escapes every control, bidi and surrogate code point of the crafted corpus."""
    for text in CRAFTED:
        shown = printable(text, max_chars=10_000)
        assert _UNSAFE_OUTPUT.search(shown) is None
        assert "\n" not in shown
