"""Avro schema resolution rules and the schema-evolution gate.

:func:`check_pair` says whether data written with one schema can be read with another,
following the resolution rules of the Avro specification:

- primitives match themselves; promotions int → long/float/double, long → float/double,
  float → double, string ↔ bytes;
- named types match when their unqualified names are equal or the reader lists the
  writer's full name among its aliases; fixed sizes must be equal;
- record fields match by name or by the reader field's aliases; a reader field the writer
  lacks needs a default; writer fields the reader lacks are skipped;
- an enum reader needs every writer symbol, or a default symbol;
- a writer union needs every branch readable; a reader union needs a branch matching the
  writer (an exact match first, then a promotion, like Avro's Java implementation);
- arrays and maps resolve their items and values.

:func:`check_versions` applies a mode (``BACKWARD``, ``FORWARD``, ``FULL``, their
``_TRANSITIVE`` forms, or ``NONE``) to the versions of every name in a registry and
returns precise findings such as
``shop.orders.OrderCreated v3 → v1: field `total_cents` changed long → string``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from choreo.avro.model import (
    Array,
    Enum,
    Fixed,
    Map,
    Named,
    Node,
    Primitive,
    Record,
    Schema,
    Union,
    Visitor,
    type_label,
)
from choreo.avro.parse import as_schema

if TYPE_CHECKING:
    from choreo.avro.loader import SchemaRegistry, SchemaVersion

__all__ = [
    "CompatibilityMode",
    "Finding",
    "Incompatibility",
    "check_pair",
    "check_versions",
    "is_compatible",
    "names_match",
    "promotes",
    "resolve_branch",
]

_PROMOTIONS: dict[str, frozenset[str]] = {
    # writer type -> reader types that can read it
    "int": frozenset({"int", "long", "float", "double"}),
    "long": frozenset({"long", "float", "double"}),
    "float": frozenset({"float", "double"}),
    "string": frozenset({"string", "bytes"}),
    "bytes": frozenset({"bytes", "string"}),
}


def promotes(writer_kind: str, reader_kind: str) -> bool:
    """Return True when a primitive written as ``writer_kind`` reads as ``reader_kind``."""
    return reader_kind in _PROMOTIONS.get(writer_kind, frozenset({writer_kind}))


class CompatibilityMode(enum.StrEnum):
    """Which directions (and which earlier versions) a new schema version must satisfy."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    """The new version reads data written with the previous one."""
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    """The new version reads data written with every earlier one."""
    FORWARD = "FORWARD"
    """The previous version reads data written with the new one."""
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    """Every earlier version reads data written with the new one."""
    FULL = "FULL"
    """BACKWARD and FORWARD."""
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    """BACKWARD_TRANSITIVE and FORWARD_TRANSITIVE."""

    @property
    def transitive(self) -> bool:
        """Return True when every earlier version is compared, not only the previous one."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """Return True when the new version must read older data."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Return True when older versions must read new data."""
        return self.value.startswith(("FORWARD", "FULL"))


_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    # kind: (as seen by a new reader of old data, as seen by an old reader of new data)
    "type": ("{at} changed {old} → {new}", "{at} changed {old} → {new}"),
    "missing-default": (
        "{at} was added without a default",
        "{at} was removed but has no default in the old version",
    ),
    "enum-symbols": (
        "{at}: enum lost symbols {detail} and has no default",
        "{at}: enum gained symbols {detail} the old version cannot read (no default)",
    ),
    "union-branch": (
        "{at}: union no longer accepts {detail}",
        "{at}: new union branch {detail} cannot be read by the old version",
    ),
    "name": (
        "{at}: {old} renamed to {new} without an alias",
        "{at}: {old} renamed to {new} without an alias",
    ),
    "fixed-size": ("{at}: fixed size changed {detail}", "{at}: fixed size changed {detail}"),
}


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One reason a reader schema cannot read a writer schema, at a field path."""

    kind: str
    """One of ``type``, ``missing-default``, ``enum-symbols``, ``union-branch``, ``name``,
    ``fixed-size``."""
    path: str
    """Dotted field path from the root (``items[].quantity``); empty for the root."""
    reader: str
    """The reader's type at ``path`` (a short label such as ``long``)."""
    writer: str
    """The writer's type at ``path``."""
    detail: str = ""

    def describe(self, *, reader_is_new: bool) -> str:
        """Return the problem phrased as a change from the old version to the new one."""
        old, new = (self.writer, self.reader) if reader_is_new else (self.reader, self.writer)
        at = f"field `{self.path}`" if self.path else "the schema"
        templates = _DESCRIPTIONS.get(self.kind, ("{at}: {detail}", "{at}: {detail}"))
        template = templates[0] if reader_is_new else templates[1]
        return template.format(at=at, old=old, new=new, detail=self.detail)

    def __str__(self) -> str:
        at = self.path or "<root>"
        return f"{at}: reader {self.reader} cannot read writer {self.writer} ({self.kind})"


def names_match(writer: Named, reader: Named) -> bool:
    """Return True when a reader named type may read a writer named type (name or alias)."""
    return writer.simple_name == reader.simple_name or writer.name in reader.aliases


def _top_match(w: Node, r: Node, pass_: int) -> bool:
    """Return whether reader ``r`` matches writer ``w`` in resolution pass ``pass_``.

    Pass 0: the same type (a named type: the same full name); pass 1: a named type of the
    same kind whose unqualified name or aliases match; pass 2: a promotion.
    """
    if isinstance(w, Primitive):
        return r.kind == w.kind if pass_ < 2 else promotes(w.kind, r.kind)
    if w.kind != r.kind:
        return False
    if isinstance(w, Named) and isinstance(r, Named):
        return w.name == r.name if pass_ == 0 else names_match(w, r)
    return True  # array, map


def resolve_branch(
    writer: Node,
    reader_branches: Sequence[Node],
    writer_schema: Schema,
    reader_schema: Schema,
) -> int | None:
    """Return the index of the reader union branch that reads a (non-union) writer type.

    The first branch of the same type wins (for named types: the same full name, then
    the same unqualified name or an alias), then the first promotion, as in Avro's Java
    implementation.
    """
    w = writer_schema.resolve(writer)
    branches = [reader_schema.resolve(b) for b in reader_branches]
    for pass_ in (0, 1, 2):
        for index, branch in enumerate(branches):
            if _top_match(w, branch, pass_):
                return index
    return None


def check_pair(reader: Schema | Any, writer: Schema | Any) -> list[Incompatibility]:
    """Return every reason ``reader`` cannot read data written with ``writer`` (empty: ok).

    Both are self-contained schemas: models, or normalized JSON (as in
    :attr:`SchemaVersion.schema`).
    """
    rschema, wschema = as_schema(reader), as_schema(writer)
    checker = _Checker(rschema, wschema)
    checker.check(rschema.root, wschema.root, "")
    return checker.found


def is_compatible(reader: Schema | Any, writer: Schema | Any) -> bool:
    """Return True when ``reader`` can read every datum written with ``writer``."""
    return not check_pair(reader, writer)


_Arg = tuple[Node, str]
"""What the checker carries down: the reader's node and the field path."""


class _Checker(Visitor[_Arg, None]):
    """Walk the writer's schema, resolving each node against the reader's."""

    def __init__(self, reader: Schema, writer: Schema) -> None:
        super().__init__(writer)
        self.reader = reader
        self.found: list[Incompatibility] = []
        self.active: set[tuple[str, str]] = set()

    def add(self, kind: str, path: str, r: Node | str, w: Node | str, detail: str = "") -> None:
        rl = r if isinstance(r, str) else type_label(r, self.reader)
        wl = w if isinstance(w, str) else type_label(w, self.schema)
        self.found.append(Incompatibility(kind, path, rl, wl, detail))

    def check(self, r: Node, w: Node, path: str) -> None:
        r = self.reader.resolve(r)
        w = self.schema.resolve(w)
        if isinstance(r, Union) and not isinstance(w, Union):
            index = resolve_branch(w, r.branches, self.schema, self.reader)
            if index is None:
                self.add("type", path, r, w)
            else:
                self.check(r.branches[index], w, path)
            return
        self.visit(w, (r, path))

    def union(self, node: Union, arg: _Arg) -> None:
        r, path = arg
        branches = r.branches if isinstance(r, Union) else (r,)
        for wb in node.branches:
            index = resolve_branch(wb, branches, self.schema, self.reader)
            if index is not None:
                self.check(branches[index], wb, path)
            elif isinstance(r, Union):
                self.add("union-branch", path, r, node, type_label(wb, self.schema))
            else:
                self.add("type", path, r, node)
                return

    def primitive(self, node: Primitive, arg: _Arg) -> None:
        r, path = arg
        if not promotes(node.kind, r.kind):
            self.add("type", path, r, node)

    def array(self, node: Array, arg: _Arg) -> None:
        r, path = arg
        if isinstance(r, Array):
            self.check(r.items, node.items, f"{path}[]")
        else:
            self.add("type", path, r, node)

    def map(self, node: Map, arg: _Arg) -> None:
        r, path = arg
        if isinstance(r, Map):
            self.check(r.values, node.values, f"{path}{{}}")
        else:
            self.add("type", path, r, node)

    def named(self, node: Named, r: Node, path: str) -> bool:
        """Return True when ``r`` is a named type of the same kind and a matching name."""
        if not isinstance(r, Named) or r.kind != node.kind:
            self.add("type", path, r, node)
            return False
        if not names_match(node, r):
            self.add("name", path, r, node)
            return False
        return True

    def fixed(self, node: Fixed, arg: _Arg) -> None:
        r, path = arg
        if self.named(node, r, path) and isinstance(r, Fixed) and r.size != node.size:
            self.add("fixed-size", path, r, node, f"{node.size} ↔ {r.size}")

    def enum(self, node: Enum, arg: _Arg) -> None:
        r, path = arg
        if not (self.named(node, r, path) and isinstance(r, Enum)):
            return
        missing = [s for s in node.symbols if s not in r.symbols]
        if missing and r.default is None:
            self.add("enum-symbols", path, r, node, "{" + ", ".join(missing) + "}")

    def record(self, node: Record, arg: _Arg) -> None:
        r, path = arg
        if not (self.named(node, r, path) and isinstance(r, Record)):
            return
        key = (r.name, node.name)
        if key in self.active:  # recursive types: assume compatible while in progress
            return
        self.active.add(key)
        writer_fields = {f.name: f for f in node.fields}
        for field in r.fields:
            here = f"{path}.{field.name}" if path else field.name
            match = writer_fields.get(field.name) or next(
                (writer_fields[a] for a in field.aliases if a in writer_fields), None
            )
            if match is not None:
                self.check(field.type, match.type, here)
            elif not field.has_default:
                self.add("missing-default", here, field.type, "absent")
        self.active.discard(key)


# --- the gate -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One incompatibility between two versions of one schema under a mode."""

    full_name: str
    new_version: int
    old_version: int
    reader_is_new: bool
    problem: Incompatibility

    @property
    def message(self) -> str:
        """Return the precise one-line message (``name vNEW → vOLD: field `f` changed ...``)."""
        direction = "" if self.reader_is_new else " (old readers of new data)"
        return (
            f"{self.full_name} v{self.new_version} → v{self.old_version}: "
            f"{self.problem.describe(reader_is_new=self.reader_is_new)}{direction}"
        )

    def __str__(self) -> str:
        return self.message


def check_versions(
    versions: Sequence[SchemaVersion],
    mode: CompatibilityMode | str = CompatibilityMode.BACKWARD_TRANSITIVE,
) -> list[Finding]:
    """Return the findings of one schema's versions (oldest first) under ``mode``."""
    mode = CompatibilityMode(mode)
    findings: list[Finding] = []
    if mode is CompatibilityMode.NONE:
        return findings
    ordered = sorted(versions, key=lambda v: v.version)
    for index, new in enumerate(ordered):
        earlier = ordered[:index] if mode.transitive else ordered[max(0, index - 1) : index]
        for old in earlier:
            if mode.backward:
                for problem in check_pair(new.model, old.model):
                    findings.append(Finding(new.full_name, new.version, old.version, True, problem))
            if mode.forward:
                for problem in check_pair(old.model, new.model):
                    findings.append(
                        Finding(new.full_name, new.version, old.version, False, problem)
                    )
    return findings


def check_registry(
    registry: SchemaRegistry,
    mode: CompatibilityMode | str = CompatibilityMode.BACKWARD_TRANSITIVE,
    names: Iterable[str] | None = None,
) -> dict[str, list[Finding]]:
    """Return the findings of every schema name in ``registry`` (an empty list: passes)."""
    return {
        name: check_versions(registry.versions(name), mode)
        for name in (names if names is not None else registry.names())
    }


__all__ += ["check_registry"]
