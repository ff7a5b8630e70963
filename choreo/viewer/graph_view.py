"""The declared choreography as the viewer's JSON graph of nodes and edges.

The page draws whatever ``{"nodes": [...], "edges": [...]}`` it is given; this module
turns a :class:`~choreo.choreography.graph.Choreography` into that shape. Node kinds: ``event``
(with its role), ``handler`` (``service.handler``) and ``start`` (a service starting a
saga). Edge kinds and lanes are the graph's own (``consumes``, ``emits``,
``fails_with``, ``starts``, ``undoes``; ``forward``, ``failure``, ``compensation``,
``notice``). Handler and start nodes are labelled with their service, and the handler's
name as a detail line.
"""

from __future__ import annotations

import logging
from typing import Any

from choreo.choreography.graph import Choreography, Node, NodeKind

__all__ = ["declared_graph"]

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
