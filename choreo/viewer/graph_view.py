"""The viewer's JSON graphs of nodes and edges: the declared choreography and the observed one.

The page draws whatever ``{"nodes": [...], "edges": [...]}`` it is given; this module
turns a :class:`~choreo.choreography.graph.Choreography` into that shape. Node kinds: ``event``
(with its role), ``handler`` (``service.handler``) and ``start`` (a service starting a
saga). Edge kinds and lanes are the graph's own (``consumes``, ``emits``,
``fails_with``, ``starts``, ``undoes``; ``forward``, ``failure``, ``compensation``,
``notice``). Handler and start nodes are labelled with their service, and the handler's
name as a detail line. :func:`observed_graph` draws the same shape from what sampled
sagas actually did (reactions seen through causation ids), for logs whose code the viewer
cannot import.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

from choreo.choreography.graph import Choreography, Node, NodeKind
from choreo.model.envelope import Role
from choreo.tracker.model import SagaTrace

__all__ = ["declared_graph", "observed_graph", "short_type"]

logger = logging.getLogger(__name__)


def _node_id(node: Node) -> str:
    """Return the page's id of a graph node (unique across kinds)."""
    return f"{node.kind.value}:{node.name}"


def _node_view(choreography: Choreography, node: Node) -> dict[str, Any]:
    """Return one node as the page draws it."""
    head, _, tail = node.name.rpartition(".")
    view: dict[str, Any] = {"id": _node_id(node), "kind": node.kind.value, "title": node.name}
    if node.kind is NodeKind.EVENT:
        role = choreography.role_in(node.name)
        view["label"] = tail
        view["role"] = role.value if role is not None else None
    elif node.kind is NodeKind.START:
        view["label"] = head or node.name
        view["detail"] = "starts"
        view["title"] = f"{node.name} (starts a saga)"
    else:
        view["label"] = head or node.name
        view["detail"] = tail
    return view


def declared_graph(choreography: object | None) -> dict[str, Any] | None:
    """Return the declared choreography as ``{"source": "declared", "nodes", "edges"}``, or None.

    None means there is nothing declared to draw (no choreography, or an object that is
    not a :class:`~choreo.Choreography`); the viewer then draws the graph observed
    in the events instead.
    """
    if not isinstance(choreography, Choreography):
        if choreography is not None:
            logger.debug("cannot draw a %s; drawing the observed graph", type(choreography))
        return None
    nodes = [_node_view(choreography, node) for node in choreography.nodes]
    edges = [
        {
            "from": _node_id(edge.source),
            "to": _node_id(edge.target),
            "kind": edge.kind.value,
            "lane": edge.lane.value,
        }
        for edge in choreography.edges
    ]
    return {
        "source": "declared",
        "sagas": [saga.name for saga in choreography.sagas],
        "nodes": nodes,
        "edges": edges,
    }


def short_type(event_type: str) -> str:
    """Return the last dotted part of an event type (``shop.orders.Placed`` -> ``Placed``)."""
    return event_type.rsplit(".", 1)[-1]


_LANE_OF_ROLE: Final[Mapping[Role, str]] = {
    Role.FAILURE: "failure",
    Role.FAILED: "failure",
    Role.COMPENSATION: "compensation",
    Role.COMPENSATE: "compensation",
    Role.NOTICE: "notice",
}


def observed_graph(traces: list[SagaTrace]) -> dict[str, Any]:
    """Return the choreography observed in ``traces``, shaped like the declared graph.

    Nodes are event types (with their most frequent role) and *reactions*: a service
    reacting to one event type (``handler`` nodes), or a service opening a saga
    (``start`` nodes, for events without a cause). Edges run event -> reaction
    (``consumes``, from the causation id) and reaction -> event (``emits``), each in the
    lane of the emitted event's role; counts say how often each edge was seen. This reads
    like the declared graph and, unlike a service-level graph, has no cycles for a saga.
    """
    edges: Counter[tuple[str, str, str, str]] = Counter()
    roles: dict[str, Counter[str]] = {}
    reactions: dict[str, dict[str, Any]] = {}
    for trace in traces:
        type_by_id = {event.event_id: event.event_type for event in trace.events}
        for event in trace.events:
            roles.setdefault(event.event_type, Counter())[event.role.value] += 1
            cause_type = type_by_id.get(event.causation_id or "")
            if cause_type is None:
                reaction_id = f"start:{event.service}"
                if reaction_id not in reactions:
                    reactions[reaction_id] = {
                        "id": reaction_id,
                        "kind": "start",
                        "label": event.service,
                        "detail": "starts" if event.role is Role.START else "emits",
                        "title": f"{event.service}: events with no observed cause",
                    }
            else:
                reaction_id = f"handler:{event.service}<-{cause_type}"
                if reaction_id not in reactions:
                    reactions[reaction_id] = {
                        "id": reaction_id,
                        "kind": "handler",
                        "label": event.service,
                        "detail": f"on {short_type(cause_type)}",
                        "title": f"{event.service}, reacting to {cause_type}",
                    }
            lane = _LANE_OF_ROLE.get(event.role, "forward")
            if cause_type is not None:
                edges[(f"event:{cause_type}", reaction_id, "consumes", lane)] += 1
            edges[(reaction_id, f"event:{event.event_type}", "emits", lane)] += 1
    nodes: list[dict[str, Any]] = [reactions[key] for key in sorted(reactions)]
    nodes.extend(
        {
            "id": f"event:{event_type}",
            "kind": "event",
            "label": short_type(event_type),
            "title": event_type,
            "role": counter.most_common(1)[0][0],
        }
        for event_type, counter in sorted(roles.items())
    )
    return {
        "source": "observed",
        "sagas_sampled": len(traces),
        "nodes": nodes,
        "edges": [
            {"from": source, "to": target, "kind": kind, "lane": lane, "count": count}
            for (source, target, kind, lane), count in sorted(edges.items())
        ],
    }
