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

The measures (:func:`find_recursion`, :func:`measure`) are folds over the model that
memoize per named type, so they take time linear in the schema's size even when its
expansion (every use of a named type written out) is exponential.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from choreo.avro.jsonform import to_json
from choreo.avro.model import (
    Array,
    Map,
    Named,
    Node,
    Record,
    Ref,
    Schema,
    Union,
    Visitor,
)
from choreo.avro.parse import ParsedFile, as_schema

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "LintIssue",
    "Measure",
    "find_recursion",
    "lint_files",
    "lint_schema",
    "measure",
]

DEFAULT_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class LintIssue:
    """One problem found by lint: where, which rule, and what is wrong."""

    source: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message} [{self.rule}]"


class _Recursion(Visitor[list[str], "list[str] | None"]):
    """The chain of names of the first recursive type; ``arg`` is the stack of records."""

    def __init__(self, schema: Schema) -> None:
        super().__init__(schema)
        self.done: set[str] = set()

    def leaf(self, node: Node, arg: list[str]) -> list[str] | None:
        return None

    primitive = enum = fixed = leaf

    def array(self, node: Array, arg: list[str]) -> list[str] | None:
        return self.visit(node.items, arg)

    def map(self, node: Map, arg: list[str]) -> list[str] | None:
        return self.visit(node.values, arg)

    def union(self, node: Union, arg: list[str]) -> list[str] | None:
        return next((c for c in (self.visit(b, arg) for b in node.branches) if c), None)

    def ref(self, node: Ref, arg: list[str]) -> list[str] | None:
        if node.name in arg:
            return [*arg[arg.index(node.name) :], node.name]
        if node.name in self.done:
            return None
        return self.visit(self.schema.named[node.name], arg)

    def record(self, node: Record, arg: list[str]) -> list[str] | None:
        if node.name in arg:
            return [*arg[arg.index(node.name) :], node.name]
        arg.append(node.name)
        for field in node.fields:
            found = self.visit(field.type, arg)
            if found:
                return found
        arg.pop()
        self.done.add(node.name)
        return None


def find_recursion(schema: Schema | Any) -> list[str] | None:
    """Return the chain of names of a recursive type in a self-contained schema, or None."""
    model = as_schema(schema)
    return _Recursion(model).visit(model.root, [])


@dataclass(frozen=True, slots=True)
class Measure:
    """Sizes of a non-recursive schema, as if every named type were written out at each use.

    ``depth``: records, arrays and maps nested (lint's depth); ``collections``: arrays and
    maps nested; ``nodes``: types in the full expansion (what a compiled codec inlines).
    """

    depth: int
    collections: int
    nodes: int

    def combine(self, other: Measure) -> Measure:
        """Return the measure of two siblings (deepest of each, nodes added)."""
        return Measure(
            max(self.depth, other.depth),
            max(self.collections, other.collections),
            self.nodes + other.nodes,
        )

    def nest(self, *, collection: bool) -> Measure:
        """Return the measure of a record (or, with ``collection``, an array or map) around."""
        return Measure(self.depth + 1, self.collections + int(collection), self.nodes + 1)


_LEAF = Measure(0, 0, 1)


class _Measure(Visitor[None, Measure]):
    """:class:`Measure` of each node, memoized per named type."""

    def __init__(self, schema: Schema) -> None:
        super().__init__(schema)
        self.memo: dict[str, Measure] = {}

    def leaf(self, node: Node, arg: None) -> Measure:
        return _LEAF

    primitive = enum = fixed = leaf

    def array(self, node: Array, arg: None) -> Measure:
        return self.visit(node.items, None).nest(collection=True)

    def map(self, node: Map, arg: None) -> Measure:
        return self.visit(node.values, None).nest(collection=True)

    def union(self, node: Union, arg: None) -> Measure:
        total = Measure(0, 0, 1)
        for branch in node.branches:
            total = total.combine(self.visit(branch, None))
        return total

    def ref(self, node: Ref, arg: None) -> Measure:
        known = self.memo.get(node.name)
        if known is not None:
            return known
        return self.visit(self.schema.named[node.name], None)

    def record(self, node: Record, arg: None) -> Measure:
        cached = self.memo.get(node.name)
        if cached is not None:
            return cached
        self.memo[node.name] = _LEAF  # a recursive use counts as a leaf (lint reports it)
        inner = Measure(0, 0, 0)
        for field in node.fields:
            inner = inner.combine(self.visit(field.type, None))
        result = inner.nest(collection=False)
        self.memo[node.name] = result
        return result


def measure(schema: Schema | Any) -> Measure:
    """Return the :class:`Measure` of a self-contained schema (in time linear in its size)."""
    model = as_schema(schema)
    return _Measure(model).visit(model.root, None)


def lint_schema(
    schema: Schema | Any,
    *,
    source: str,
    max_depth: int | None = None,
    require_namespace: bool = True,
) -> list[LintIssue]:
    """Return the lint issues of one self-contained schema (recursion, depth, namespaces)."""
    model = as_schema(schema)
    limit = DEFAULT_MAX_DEPTH if max_depth is None else max_depth
    issues: list[LintIssue] = []
    chain = find_recursion(model)
    if chain:
        issues.append(LintIssue(source, "recursive", "recursive type: " + " → ".join(chain)))
    else:
        depth = measure(model).depth
        if depth > limit:
            issues.append(
                LintIssue(source, "depth", f"nesting depth {depth} exceeds the limit of {limit}")
            )
    if require_namespace:
        issues.extend(
            LintIssue(source, "namespace", f"{d.kind} `{d.name}` has no namespace")
            for d in model.definitions()
            if "." not in d.name
        )
    return issues


class _Version(Protocol):
    @property
    def version(self) -> int: ...

    @property
    def model(self) -> Schema: ...


class LintedFile(Protocol):
    """What :func:`lint_files` needs of a loaded file (a ``choreo.avro.loader.LoadedFile``)."""

    @property
    def source(self) -> str: ...

    @property
    def parsed(self) -> ParsedFile: ...

    @property
    def version(self) -> _Version: ...


def lint_files(files: Sequence[LintedFile], *, max_depth: int | None = None) -> list[LintIssue]:
    """Return the lint issues of files loaded together (per-file rules plus name clashes)."""
    issues: list[LintIssue] = []
    for item in files:
        issues.extend(lint_schema(item.version.model, source=item.source, max_depth=max_depth))
    issues.extend(_name_clashes(files))
    return issues


def _content(definition: Named) -> str:
    return json.dumps(to_json(definition, docs=False), sort_keys=True, separators=(",", ":"))


def _name_clashes(files: Iterable[LintedFile]) -> list[LintIssue]:
    latest_top: dict[str, tuple[int, str, str]] = {}
    nested: dict[str, list[tuple[str, str]]] = {}
    for item in files:
        top = item.parsed.full_name
        for name, definition in item.parsed.defined.items():
            content = _content(definition)
            if name != top:
                nested.setdefault(name, []).append((item.source, content))
                continue
            previous = latest_top.get(name)
            if previous is None or item.version.version > previous[0]:
                latest_top[name] = (item.version.version, item.source, content)
    issues: list[LintIssue] = []
    for name, places in sorted(nested.items()):
        reference = latest_top.get(name)
        first_source, first_content = (reference[1], reference[2]) if reference else places[0]
        issues.extend(
            LintIssue(source, "name-clash", f"`{name}` is defined differently in {first_source}")
            for source, content in places
            if content != first_content
        )
    return issues


__all__ += ["LintedFile"]
