"""Bounded walks over a schema's raw JSON, before it is parsed (:mod:`choreo.avro.parse`).

Untrusted JSON is bounded before anything recursive touches it: nesting deeper than
:data:`MAX_JSON_DEPTH` or more than :data:`MAX_JSON_NODES` values raise
:class:`~choreo.errors.SchemaError`. Both walks here are iterative, so no input can
exhaust the stack.
"""

from __future__ import annotations

from typing import Any

from choreo.avro.model import NAMED_KINDS
from choreo.errors import SchemaError

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_JSON_NODES",
    "check_json_bounds",
    "full_name",
    "local_names",
    "namespace_of",
]

MAX_JSON_DEPTH = 128
"""Deepest JSON nesting a schema may have (a depth-8 schema needs about 40)."""
MAX_JSON_NODES = 200_000
"""Most JSON values (objects, lists, strings, numbers) one schema may hold."""


def full_name(name: str, namespace: str | None) -> str:
    """Return the full name of ``name`` in ``namespace`` (a dotted name is already full)."""
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def namespace_of(fullname: str) -> str | None:
    """Return the namespace of a full name, or None for the null namespace."""
    head, _, _ = fullname.rpartition(".")
    return head or None


def check_json_bounds(
    raw: Any, *, source: str, max_depth: int = MAX_JSON_DEPTH, max_nodes: int = MAX_JSON_NODES
) -> None:
    """Raise :class:`SchemaError` when ``raw`` nests deeper or holds more values than allowed.

    Walks iteratively, so no input can exhaust the stack here.
    """
    stack: list[tuple[Any, int]] = [(raw, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise SchemaError(f"{source}: schema has more than {max_nodes} JSON values")
        if depth > max_depth:
            raise SchemaError(f"{source}: schema nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def local_names(raw: Any, source: str) -> set[str]:
    """Return the full names of every named type defined inside raw JSON ``raw``."""
    check_json_bounds(raw, source=source)
    found: set[str] = set()
    stack: list[tuple[Any, str | None]] = [(raw, None)]
    while stack:
        node, namespace = stack.pop()
        if isinstance(node, list):
            stack.extend((branch, namespace) for branch in node)
        elif isinstance(node, dict):
            stack.extend(_local_children(node, namespace, found))
    return found


def _local_children(
    node: dict[str, Any], namespace: str | None, found: set[str]
) -> list[tuple[Any, str | None]]:
    kind = node.get("type")
    if kind in NAMED_KINDS and isinstance(node.get("name"), str):
        own = node.get("namespace") if isinstance(node.get("namespace"), str) else namespace
        fname = full_name(node["name"], own)
        found.add(fname)
        fields = node.get("fields")
        inner = namespace_of(fname)
        return [(f.get("type"), inner) for f in fields or () if isinstance(f, dict)]
    if kind == "array":
        return [(node.get("items"), namespace)]
    if kind == "map":
        return [(node.get("values"), namespace)]
    if isinstance(kind, dict | list):
        return [(kind, namespace)]
    return []
