"""Draw a choreography as a Mermaid flowchart or a Graphviz DOT digraph.

Both drawings show the same thing: one box (subgraph / cluster) per service holding its
handlers, event types between them, and edges styled by lane:

- forward edges (the happy path): solid;
- failure edges (a step's ``fails_with``): dashed, amber, labelled ``fails``;
- compensation edges (into and out of compensations): dashed, red; a compensation's
  ``undoes`` link is dashed red and labelled ``undoes``;
- notice edges (listeners): dotted, grey.

Event types are filled by role: start blue, completed green, failed red, failure amber,
compensation pink, notice grey. A pivot is a hexagon (Mermaid) or a double octagon (DOT);
a retriable step has rounded corners; a listener is a parallelogram. Node ids are
generated (``s0``, ``h0``, ``e0``); every label is escaped for its format.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from choreo.choreography.graph import Choreography, Edge, EdgeKind, Lane, Node, NodeKind
from choreo.choreography.service import StepKind
from choreo.model.envelope import Role

__all__ = ["dot_escape", "mermaid_escape", "to_dot", "to_mermaid"]

logger = logging.getLogger(__name__)

_ROLE_FILL: dict[Role, tuple[str, str]] = {
    # role: (fill, stroke)
    Role.START: ("#cfe8ff", "#1f6feb"),
    Role.STEP: ("#f6f8fa", "#57606a"),
    Role.FAILURE: ("#fff1c2", "#bf8700"),
    Role.COMPENSATION: ("#ffe4e8", "#cf222e"),
    Role.COMPLETED: ("#d4f7d4", "#2da44e"),
    Role.FAILED: ("#ffd7d5", "#cf222e"),
    Role.NOTICE: ("#eaeef2", "#8c959f"),
    Role.COMMAND: ("#e6e0ff", "#8250df"),
    Role.COMPENSATE: ("#ffe4f0", "#bf3989"),
}
_UNKNOWN_FILL = ("#ffffff", "#57606a")

_LANE_COLOR: dict[Lane, str] = {
    Lane.FORWARD: "#24292f",
    Lane.FAILURE: "#bf8700",
    Lane.COMPENSATION: "#cf222e",
    Lane.NOTICE: "#8c959f",
}

_KIND_SUFFIX: dict[StepKind, str] = {
    StepKind.COMPENSATABLE: "",
    StepKind.PIVOT: " (pivot)",
    StepKind.RETRIABLE: " (retriable)",
    StepKind.COMPENSATION: " (compensation)",
    StepKind.LISTENER: " (listener)",
    StepKind.ORCHESTRATION: " (orchestrator)",
}


@dataclass(frozen=True, slots=True)
class _Box:
    """One drawn node: its generated id, label, style class and owning service (if any)."""

    id: str
    label: str
    style: str
    service: str | None
    role: Role | None = None
    is_event: bool = False


class _Layout:
    """Ids, labels and style classes of a choreography's nodes, shared by both formats."""

    def __init__(self, choreography: Choreography) -> None:
        self.choreography = choreography
        roles = choreography.roles()
        self.boxes: dict[Node, _Box] = {}
        counters = {NodeKind.START: 0, NodeKind.HANDLER: 0, NodeKind.EVENT: 0}
        prefix = {NodeKind.START: "s", NodeKind.HANDLER: "h", NodeKind.EVENT: "e"}
        short = _short_names(choreography.event_types)
        for node in choreography.nodes:
            node_id = f"{prefix[node.kind]}{counters[node.kind]}"
            counters[node.kind] += 1
            if node.kind is NodeKind.EVENT:
                role = roles.get(node.name)
                style = f"role_{role.value}" if role is not None else "role_unknown"
                box = _Box(node_id, short[node.name], style, None, role=role, is_event=True)
            elif node.kind is NodeKind.START:
                box = _Box(node_id, "start", "sagastart", node.name.partition(".")[0])
            else:
                spec = choreography.handler(node.name)
                assert spec is not None
                label = spec.name + _KIND_SUFFIX[spec.kind]
                box = _Box(node_id, label, spec.kind.value, spec.service)
            self.boxes[node] = box

    def by_service(self) -> Iterator[tuple[str, list[_Box]]]:
        """Yield each service's name with its boxes (start and handlers), in order."""
        for service in self.choreography.services:
            boxes = [b for b in self.boxes.values() if b.service == service.name]
            if boxes:
                yield service.name, boxes

    def loose(self) -> list[_Box]:
        """Return the boxes outside any service: the event types."""
        return [b for b in self.boxes.values() if b.service is None]


def _short_names(event_types: tuple[str, ...]) -> dict[str, str]:
    """Return each event type's simple name, or its full name when two share a simple name."""
    simple = {t: t.rpartition(".")[2] for t in event_types}
    counts: dict[str, int] = {}
    for name in simple.values():
        counts[name] = counts.get(name, 0) + 1
    return {t: (name if counts[name] == 1 else t) for t, name in simple.items()}


def _edge_label(edge: Edge) -> str:
    if edge.kind is EdgeKind.FAILS_WITH:
        return "fails"
    if edge.kind is EdgeKind.UNDOES:
        return "undoes"
    return ""


# --- Mermaid ---------------------------------------------------------------------------

_MERMAID_SHAPES: dict[str, tuple[str, str]] = {
    "compensatable": ("[", "]"),
    "pivot": ("{{", "}}"),
    "retriable": ("(", ")"),
    "compensation": ("[", "]"),
    "listener": ("[/", "/]"),
    "orchestration": ("[[", "]]"),
    "sagastart": ("((", "))"),
}
_MERMAID_EVENT_SHAPE = ("([", "])")


def mermaid_escape(text: str) -> str:
    """Return ``text`` safe inside a double-quoted Mermaid label (entity codes for ``"#<>&``)."""
    replacements = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}
    return "".join(replacements.get(ch, ch) for ch in text).replace("\n", " ")


def to_mermaid(choreography: Choreography) -> str:
    """Return ``choreography`` as a Mermaid ``flowchart LR`` (text ending in a newline)."""
    layout = _Layout(choreography)
    lines = ["flowchart LR"]
    for index, (service, boxes) in enumerate(layout.by_service()):
        lines.append(f'  subgraph svc{index}["{mermaid_escape(service)}"]')
        lines.extend(f"    {_mermaid_node(box)}" for box in boxes)
        lines.append("  end")
    lines.extend(f"  {_mermaid_node(box)}" for box in layout.loose())
    by_lane: dict[Lane, list[int]] = {}
    for index, edge in enumerate(choreography.edges):
        source, target = layout.boxes[edge.source].id, layout.boxes[edge.target].id
        arrow = "-->" if edge.lane is Lane.FORWARD else "-.->"
        label = _edge_label(edge)
        text = f"|{mermaid_escape(label)}|" if label else ""
        lines.append(f"  {source} {arrow}{text} {target}")
        by_lane.setdefault(edge.lane, []).append(index)
    for lane, indexes in by_lane.items():
        if lane is Lane.FORWARD:
            continue
        dash = "2 2" if lane is Lane.NOTICE else "5 5"
        lines.append(
            f"  linkStyle {','.join(map(str, indexes))} "
            f"stroke:{_LANE_COLOR[lane]},stroke-width:2px,stroke-dasharray:{dash}"
        )
    lines.extend(_mermaid_classes(layout))
    return "\n".join(lines) + "\n"


def _mermaid_node(box: _Box) -> str:
    left, right = _MERMAID_EVENT_SHAPE if box.is_event else _MERMAID_SHAPES[box.style]
    return f'{box.id}{left}"{mermaid_escape(box.label)}"{right}'


def _mermaid_classes(layout: _Layout) -> list[str]:
    defs = {
        **{
            f"role_{role.value}": f"fill:{fill},stroke:{stroke}"
            for role, (fill, stroke) in _ROLE_FILL.items()
        },
        "role_unknown": f"fill:{_UNKNOWN_FILL[0]},stroke:{_UNKNOWN_FILL[1]}",
        "sagastart": "fill:#cfe8ff,stroke:#1f6feb",
        "compensatable": "fill:#ffffff,stroke:#24292f",
        "pivot": "fill:#ffffff,stroke:#8250df,stroke-width:3px",
        "retriable": "fill:#ffffff,stroke:#2da44e",
        "compensation": "fill:#ffffff,stroke:#cf222e,stroke-dasharray:5 5",
        "listener": "fill:#ffffff,stroke:#8c959f",
        "orchestration": "fill:#f3efff,stroke:#8250df,stroke-width:2px",
    }
    for role in (Role.COMPLETED, Role.FAILED):
        defs[f"role_{role.value}"] += ",stroke-width:3px"
    members: dict[str, list[str]] = {}
    for box in layout.boxes.values():
        members.setdefault(box.style, []).append(box.id)
    lines = [f"  classDef {name} {defs[name]}" for name in defs if name in members]
    lines.extend(f"  class {','.join(ids)} {name}" for name, ids in members.items())
    return lines


# --- Graphviz DOT ------------------------------------------------------------------------

_DOT_SHAPES: dict[str, str] = {
    "compensatable": 'shape=box, style="filled", fillcolor="#ffffff"',
    "pivot": 'shape=doubleoctagon, style="filled", fillcolor="#ffffff", color="#8250df"',
    "retriable": 'shape=box, style="rounded,filled", fillcolor="#ffffff", color="#2da44e"',
    "compensation": 'shape=box, style="dashed,filled", fillcolor="#ffffff", color="#cf222e"',
    "listener": 'shape=parallelogram, style="filled", fillcolor="#ffffff", color="#8c959f"',
    "orchestration": 'shape=box3d, style="filled", fillcolor="#f3efff", color="#8250df"',
    "sagastart": 'shape=circle, style="filled", fillcolor="#cfe8ff", color="#1f6feb"',
}


def dot_escape(text: str) -> str:
    """Return ``text`` as a double-quoted DOT string (backslash, quote and newline escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(choreography: Choreography) -> str:
    """Return ``choreography`` as a Graphviz ``digraph`` (text ending in a newline)."""
    layout = _Layout(choreography)
    lines = [
        "digraph choreography {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for index, (service, boxes) in enumerate(layout.by_service()):
        lines.append(f"  subgraph cluster_svc{index} {{")
        lines.append(f'    label={dot_escape(service)}; style="rounded"; color="#8c959f";')
        lines.extend(f"    {_dot_node(box)}" for box in boxes)
        lines.append("  }")
    lines.extend(f"  {_dot_node(box)}" for box in layout.loose())
    for edge in choreography.edges:
        source, target = layout.boxes[edge.source].id, layout.boxes[edge.target].id
        attrs = [f'color="{_LANE_COLOR[edge.lane]}"']
        if edge.lane in (Lane.FAILURE, Lane.COMPENSATION):
            attrs.append("style=dashed")
        elif edge.lane is Lane.NOTICE:
            attrs.append("style=dotted")
        label = _edge_label(edge)
        if label:
            attrs.append(f'label={dot_escape(label)}, fontcolor="{_LANE_COLOR[edge.lane]}"')
        if edge.kind is EdgeKind.UNDOES:
            attrs.append("constraint=false")
        lines.append(f"  {source} -> {target} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(box: _Box) -> str:
    if box.is_event:
        fill, stroke = _ROLE_FILL[box.role] if box.role is not None else _UNKNOWN_FILL
        width = "2" if box.role in (Role.COMPLETED, Role.FAILED) else "1"
        attrs = (
            f'shape=box, style="rounded,filled", fillcolor="{fill}", color="{stroke}", '
            f"penwidth={width}"
        )
    else:
        attrs = _DOT_SHAPES[box.style]
    return f"{box.id} [label={dot_escape(box.label)}, {attrs}];"
