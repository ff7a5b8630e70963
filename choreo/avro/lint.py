"""Lint rules that keep schemas safe to decode from untrusted bytes and easy to evolve.

Rules (each issue names its rule):

- ``recursive``: a named type that contains itself. Recursive data has no depth bound, so
  a hostile payload could nest until the decoder exhausts the stack.
- ``depth``: records, arrays and maps nested deeper than ``max_depth`` (default 8).
  Together with ``recursive`` this bounds the decoder's recursion for any input.
- ``name-clash``: one full name defined in two files with different content (versions of
  a top-level type are files ``Name.vN.avsc`` and are not clashes).
- ``namespace``: a record, enum or fixed without a namespace (full names must be unique
  across services; the null namespace is shared by everybody).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from choreo.avro.model import PRIMITIVES, JsonSchema, collect_named, schema_depth, walk_named

if TYPE_CHECKING:
    from choreo.avro.loader import LoadedFile

__all__ = ["DEFAULT_MAX_DEPTH", "LintIssue", "find_recursion", "lint_files", "lint_schema"]

DEFAULT_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class LintIssue:
    """One problem found by lint: where, which rule, and what is wrong."""

    source: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message} [{self.rule}]"


def find_recursion(schema: JsonSchema) -> list[str] | None:
    """Return the chain of names of a recursive type in a self-contained schema, or None."""
    named = collect_named(schema)
    done: set[str] = set()

    def visit(  # noqa: PLR0911, PLR0912 - one branch per Avro type
        n: JsonSchema, stack: list[str]
    ) -> list[str] | None:
        if isinstance(n, str):
            if n in PRIMITIVES:
                return None
            if n in stack:
                return [*stack[stack.index(n) :], n]
            if n in done:
                return None
            return visit(named[n], stack)
        if isinstance(n, list):
            for branch in n:
                found = visit(branch, stack)
                if found:
                    return found
            return None
        kind = n["type"]
        if kind in ("record", "error"):
            name = n["name"]
            if name in stack:
                return [*stack[stack.index(name) :], name]
            stack.append(name)
            for field in n["fields"]:
                found = visit(field["type"], stack)
                if found:
                    return found
            stack.pop()
            done.add(name)
            return None
        if kind == "array":
            return visit(n["items"], stack)
        if kind == "map":
            return visit(n["values"], stack)
        return None

    return visit(schema, [])


def lint_schema(
    schema: JsonSchema,
    *,
    source: str,
    max_depth: int | None = None,
    require_namespace: bool = True,
) -> list[LintIssue]:
    """Return the lint issues of one self-contained schema (recursion, depth, namespaces)."""
    limit = DEFAULT_MAX_DEPTH if max_depth is None else max_depth
    issues: list[LintIssue] = []
    chain = find_recursion(schema)
    if chain:
        issues.append(LintIssue(source, "recursive", "recursive type: " + " → ".join(chain)))
    else:
        depth = schema_depth(schema)
        if depth > limit:
            issues.append(
                LintIssue(source, "depth", f"nesting depth {depth} exceeds the limit of {limit}")
            )
    if require_namespace:
        for definition in walk_named(schema):
            if "." not in definition["name"]:
                kind = "record" if definition["type"] == "error" else definition["type"]
                issues.append(
                    LintIssue(
                        source, "namespace", f"{kind} `{definition['name']}` has no namespace"
                    )
                )
    return issues


def _content(definition: dict[str, Any]) -> str:
    def strip(n: Any) -> Any:
        if isinstance(n, dict):
            return {k: strip(v) for k, v in n.items() if k != "doc"}
        if isinstance(n, list):
            return [strip(v) for v in n]
        return n

    return json.dumps(strip(definition), sort_keys=True, separators=(",", ":"))


def lint_files(files: Sequence[LoadedFile], *, max_depth: int | None = None) -> list[LintIssue]:
    """Return the lint issues of files loaded together (per-file rules plus name clashes)."""
    issues: list[LintIssue] = []
    for item in files:
        issues.extend(lint_schema(item.version.schema, source=item.source, max_depth=max_depth))
    issues.extend(_name_clashes(files))
    return issues


def _name_clashes(files: Iterable[LoadedFile]) -> list[LintIssue]:
    latest_top: dict[str, tuple[int, str, str]] = {}
    nested: dict[str, list[tuple[str, str]]] = {}
    for item in files:
        top = item.normalized.full_name
        for name, definition in item.normalized.defined.items():
            content = _content(definition)
            if name == top:
                previous = latest_top.get(name)
                if previous is None or item.version.version > previous[0]:
                    latest_top[name] = (item.version.version, item.source, content)
            else:
                nested.setdefault(name, []).append((item.source, content))
    issues: list[LintIssue] = []
    for name, places in sorted(nested.items()):
        reference = latest_top.get(name)
        first_source, first_content = (
            (reference[1], reference[2]) if reference else (places[0][0], places[0][1])
        )
        for source, content in places:
            if content != first_content:
                issues.append(
                    LintIssue(
                        source,
                        "name-clash",
                        f"`{name}` is defined differently in {first_source}",
                    )
                )
    return issues
