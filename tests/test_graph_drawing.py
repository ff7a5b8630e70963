"""Tests of the Mermaid and Graphviz drawings: parsed back, edge by edge and style by style."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from choreo.choreography.discovery import discover
from choreo.choreography.drawing import dot_escape, mermaid_escape, to_dot, to_mermaid
from choreo.choreography.graph import Choreography, Lane
from choreo.choreography.service import Saga, Service
from choreo.model.events import Event

RED = "#cf222e"


@pytest.fixture(scope="module")
def shop() -> Choreography:
    """Return the valid order-fulfilment choreography."""
    return discover("fixtures.choreographies.valid_order").choreography()


# --- a small Mermaid reader ---------------------------------------------------------------

_M_NODE = re.compile(
    r'^\s*(?P<id>[a-z]+\d+)(?P<open>[\[\(\{/]+)"(?P<label>[^"]*)"(?P<close>[\]\)\}/]+)$'
)
_M_EDGE = re.compile(
    r"^\s*(?P<src>\w+) (?P<arrow>-->|-\.->)(?:\|(?P<label>[^|]*)\|)? (?P<dst>\w+)$"
)
_M_SUBGRAPH = re.compile(r'^\s*subgraph (?P<id>\w+)\["(?P<label>[^"]*)"\]$')


@dataclass
class Mermaid:
    """The parts of a Mermaid flowchart the tests look at."""

    labels: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, str] = field(default_factory=dict)
    edges: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    link_styles: dict[int, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    subgraphs: dict[str, list[str]] = field(default_factory=dict)


def parse_mermaid(text: str) -> Mermaid:
    """Parse the subset of Mermaid that to_mermaid writes; fail on any other line."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    chart = Mermaid()
    current: list[str] | None = None
    for line in lines[1:]:
        if m := _M_SUBGRAPH.match(line):
            current = chart.subgraphs.setdefault(m["label"], [])
        elif line.strip() == "end":
            current = None
        elif m := _M_NODE.match(line):
            chart.labels[m["id"]] = m["label"]
            chart.shapes[m["id"]] = m["open"] + m["close"]
            if current is not None:
                current.append(m["id"])
        elif m := _M_EDGE.match(line):
            chart.edges.append((m["src"], m["arrow"], m["label"], m["dst"]))
        elif line.strip().startswith("linkStyle "):
            _, indexes, style = line.split(maxsplit=2)
            for index in indexes.split(","):
                chart.link_styles[int(index)] = style
        elif line.strip().startswith("classDef "):
            continue
        elif line.strip().startswith("class "):
            _, ids, name = line.split()
            for node_id in ids.split(","):
                chart.classes[node_id] = name
        else:
            pytest.fail(f"unexpected Mermaid line: {line!r}")
    return chart


def test_mermaid_has_every_edge_with_its_arrow(shop: Choreography) -> None:
    """Each graph edge is drawn once: solid forward, dotted otherwise, labelled where due."""
    chart = parse_mermaid(to_mermaid(shop))
    by_label = {label: node_id for node_id, label in chart.labels.items()}
    assert len(chart.edges) == len(shop.edges)
    drawn = {(chart.labels[s], a, lab, chart.labels[d]) for s, a, lab, d in chart.edges}
    assert ("OrderCreated", "-->", None, "reserve") in drawn
    assert ("reserve", "-->", None, "InventoryReserved") in drawn
    assert ("reserve", "-.->", "fails", "InventoryReservationFailed") in drawn
    assert ("release (compensation)", "-.->", "undoes", "reserve") in drawn
    assert ("fail_order (compensation)", "-.->", "undoes", "start") in drawn
    assert ("PaymentDeclined", "-.->", None, "release (compensation)") in drawn
    assert ("start", "-->", None, "OrderCreated") in drawn
    assert by_label["dispatch (pivot)"].startswith("h")


def test_mermaid_styles_compensation_edges_red_and_dashed(shop: Choreography) -> None:
    """Every compensation edge, and only those, gets the red dashed link style."""
    chart = parse_mermaid(to_mermaid(shop))
    for index, edge in enumerate(shop.edges):
        style = chart.link_styles.get(index)
        if edge.lane is Lane.COMPENSATION:
            assert style is not None and f"stroke:{RED}" in style and "dasharray" in style
        elif edge.lane is Lane.FORWARD:
            assert style is None
        else:
            assert style is not None and f"stroke:{RED}" not in style


def test_mermaid_has_one_subgraph_per_service(shop: Choreography) -> None:
    """Each service's handlers (and its saga start) sit in that service's subgraph."""
    chart = parse_mermaid(to_mermaid(shop))
    assert set(chart.subgraphs) == {s.name for s in shop.services}
    for service in shop.services:
        labels = sorted(chart.labels[i].split(" ")[0] for i in chart.subgraphs[service.name])
        expected = sorted(h.name for h in service.handlers)
        if service.started_sagas:
            expected = sorted([*expected, "start"])
        assert labels == expected
    events = [i for i, shape in chart.shapes.items() if shape == "([])"]
    assert len(events) == len(shop.event_types)
    assert not any(e in ids for ids in chart.subgraphs.values() for e in events)


def test_mermaid_styles_events_by_role_and_handlers_by_kind(shop: Choreography) -> None:
    """Terminal events get their own classes; pivots are hexagons, listeners slanted."""
    chart = parse_mermaid(to_mermaid(shop))
    by_label = {label: node_id for node_id, label in chart.labels.items()}
    assert chart.classes[by_label["OrderCompleted"]] == "role_completed"
    assert chart.classes[by_label["OrderFailed"]] == "role_failed"
    assert chart.classes[by_label["OrderCreated"]] == "role_start"
    assert chart.classes[by_label["PaymentDeclined"]] == "role_failure"
    assert chart.classes[by_label["NotificationSent"]] == "role_notice"
    assert chart.classes[by_label["release (compensation)"]] == "compensation"
    assert chart.shapes[by_label["dispatch (pivot)"]] == "{{}}"
    assert chart.shapes[by_label["notify (listener)"]] == "[//]"
    assert chart.shapes[by_label["start"]] == "(())"
    text = to_mermaid(shop)
    assert re.search(r"classDef role_completed .*stroke-width:3px", text)


# --- escaping ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weird(Event):
    """An event whose Avro name holds characters both formats must escape."""

    __avro_name__: ClassVar[str] = 'test.odd.We"ird<b>#1\\x'


@dataclass(frozen=True)
class Plain(Event):
    """A plain event."""

    __avro_name__: ClassVar[str] = "test.odd.Plain"


def weird_choreography() -> Choreography:
    """Return a tiny choreography whose event label needs escaping."""
    saga = Saga("Odd", start=Plain, completed=Weird, failed=Weird)
    odd = Service("odd", sagas=[saga])

    @odd.retriable(on=Plain, emits=Weird)
    def go(event: Plain) -> Weird:
        return Weird()

    return Choreography.from_services([odd])


def test_mermaid_escapes_labels() -> None:
    """Quotes, angle brackets and hashes become Mermaid entity codes."""
    assert mermaid_escape('a"b<c>#d&e') == "a#quot;b#lt;c#gt;#35;d#amp;e"
    text = to_mermaid(weird_choreography())
    assert '"We#quot;ird#lt;b#gt;#35;1\\x"' in text
    chart = parse_mermaid(text)
    assert len(chart.edges) == 2


def test_dot_escapes_labels() -> None:
    """Backslashes, quotes and newlines are escaped inside DOT strings."""
    assert dot_escape('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert 'label="We\\"ird<b>#1\\\\x"' in to_dot(weird_choreography())


# --- DOT -----------------------------------------------------------------------------------------

_D_NODE = re.compile(r"^\s*(?P<id>[a-z]+\d+) \[(?P<attrs>.*)\];$")
_D_EDGE = re.compile(r"^\s*(?P<src>\w+) -> (?P<dst>\w+) \[(?P<attrs>.*)\];$")
_D_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def attrs_of(text: str) -> dict[str, str]:
    """Return DOT attributes as a dict with quotes removed."""
    return {k: v.strip('"') for k, v in _D_ATTR.findall(text)}


def test_dot_has_every_edge_styled_by_lane(shop: Choreography) -> None:
    """Each edge appears; compensations red and dashed, undoes links without rank constraint."""
    text = to_dot(shop)
    assert text.startswith("digraph choreography {\n") and text.endswith("}\n")
    labels: dict[str, str] = {}
    edges: list[tuple[str, str, dict[str, str]]] = []
    for line in text.splitlines():
        if m := _D_EDGE.match(line):
            edges.append((m["src"], m["dst"], attrs_of(m["attrs"])))
        elif m := _D_NODE.match(line):
            labels[m["id"]] = attrs_of(m["attrs"])["label"]
    assert len(edges) == len(shop.edges)
    for (src, dst, attrs), edge in zip(edges, shop.edges, strict=True):
        assert labels[src].split(" ")[0] in (edge.source.name.rpartition(".")[2], "start")
        assert labels[dst].split(" ")[0] in (edge.target.name.rpartition(".")[2], "start")
        if edge.lane is Lane.COMPENSATION:
            assert attrs["color"] == RED and attrs["style"] == "dashed"
        if edge.lane is Lane.FORWARD:
            assert "style" not in attrs
    undoes = [a for _s, _d, a in edges if a.get("label") == "undoes"]
    assert len(undoes) == 4
    assert all(a["constraint"] == "false" for a in undoes)


def test_dot_has_one_cluster_per_service_and_styled_terminals(shop: Choreography) -> None:
    """Services are clusters; completed and failed events are filled green and red."""
    text = to_dot(shop)
    clusters = re.findall(r'subgraph cluster_svc\d+ \{\n\s*label="([^"]+)"', text)
    assert clusters == [s.name for s in shop.services]
    completed = re.search(r'\[label="OrderCompleted", (.*)\];', text)
    failed = re.search(r'\[label="OrderFailed", (.*)\];', text)
    assert completed and attrs_of(completed[1])["fillcolor"] == "#d4f7d4"
    assert failed and attrs_of(failed[1])["fillcolor"] == "#ffd7d5"
    assert attrs_of(completed[1])["penwidth"] == "2"


def test_drawings_skip_an_undone_step_that_does_not_exist() -> None:
    """A compensation undoing a missing step is drawn without a dangling ``undoes`` edge."""
    graph = discover("fixtures.choreographies.broken_unknown_undone_step").choreography()
    dot, mermaid = to_dot(graph), to_mermaid(graph)
    assert 'reserv"' not in dot and 'reserv"' not in mermaid
    assert len(re.findall(r" -> ", dot)) == len(graph.edges)
    assert dot.count('label="undoes"') == 1  # only shop.reject -> the saga start
    assert len(parse_mermaid(mermaid).edges) == len(graph.edges)


@pytest.fixture
def graphviz_dot() -> str:
    """Graphviz's ``dot``: the test command installs it; under CI its absence fails the run."""
    path = shutil.which("dot")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz `dot` is missing under CI (scripts/test.sh installs it)")
        pytest.skip("Graphviz `dot` is not installed (apt-get install graphviz)")
    return path


@pytest.mark.usefixtures("graphviz_dot")
@pytest.mark.parametrize("name", ["valid_order", "broken_step_after_pivot", "chained"])
def test_dot_renders_with_graphviz(name: str) -> None:
    """Graphviz accepts the DOT text and renders an SVG."""
    graph = discover(f"fixtures.choreographies.{name}").choreography()
    result = subprocess.run(
        ["dot", "-Tsvg"], input=to_dot(graph), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "<svg" in result.stdout
    assert result.stderr == ""


@pytest.mark.usefixtures("graphviz_dot")
def test_dot_renders_escaped_labels_with_graphviz() -> None:
    """Graphviz accepts labels full of quotes and backslashes."""
    result = subprocess.run(
        ["dot", "-Tsvg"],
        input=to_dot(weird_choreography()),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "We&quot;ird&lt;b&gt;#1\\x" in result.stdout
