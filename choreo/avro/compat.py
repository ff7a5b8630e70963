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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from choreo.avro.model import PRIMITIVES, JsonSchema, collect_named, type_label

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

    def describe(self, *, reader_is_new: bool) -> str:  # noqa: PLR0911 - one branch per Avro type
        """Return the problem phrased as a change from the old version to the new one."""
        old, new = (self.writer, self.reader) if reader_is_new else (self.reader, self.writer)
        at = f"field `{self.path}`" if self.path else "the schema"
        if self.kind == "type":
            return f"{at} changed {old} → {new}"
        if self.kind == "missing-default":
            if reader_is_new:
                return f"{at} was added without a default"
            return f"{at} was removed but has no default in the old version"
        if self.kind == "enum-symbols":
            if reader_is_new:
                return f"{at}: enum lost symbols {self.detail} and has no default"
            return (
                f"{at}: enum gained symbols {self.detail} the old version cannot read (no default)"
            )
        if self.kind == "union-branch":
            if reader_is_new:
                return f"{at}: union no longer accepts {self.detail}"
            return f"{at}: new union branch {self.detail} cannot be read by the old version"
        if self.kind == "name":
            return f"{at}: {old} renamed to {new} without an alias"
        if self.kind == "fixed-size":
            return f"{at}: fixed size changed {self.detail}"
        return f"{at}: {self.detail}"  # pragma: no cover - every kind is handled above

    def __str__(self) -> str:
        at = self.path or "<root>"
        return f"{at}: reader {self.reader} cannot read writer {self.writer} ({self.kind})"


def names_match(writer: Mapping[str, Any], reader: Mapping[str, Any]) -> bool:
    """Return True when a reader named type may read a writer named type (name or alias)."""
    w_name: str = writer["name"]
    r_name: str = reader["name"]
    if w_name.rpartition(".")[2] == r_name.rpartition(".")[2]:
        return True
    return w_name in reader.get("aliases", ())


def _kind(schema: JsonSchema) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind: str = schema["type"]
    return "record" if kind == "error" else kind


def _deref(schema: JsonSchema, named: Mapping[str, dict[str, Any]]) -> JsonSchema:
    if isinstance(schema, str) and schema not in PRIMITIVES:
        return named[schema]
    if isinstance(schema, dict) and schema["type"] in PRIMITIVES:
        return schema["type"]
    return schema


def _top_match(w: JsonSchema, r: JsonSchema, *, exact: bool) -> bool:
    wk, rk = _kind(w), _kind(r)
    if wk in PRIMITIVES:
        return rk == wk if exact else rk in _PROMOTIONS.get(wk, frozenset({wk}))
    if wk != rk:
        return False
    if wk in ("record", "enum", "fixed"):
        return names_match(w, r)
    return True  # array, map


def resolve_branch(
    writer: JsonSchema,
    reader_branches: Sequence[JsonSchema],
    writer_named: Mapping[str, dict[str, Any]],
    reader_named: Mapping[str, dict[str, Any]],
) -> int | None:
    """Return the index of the reader union branch that reads a (non-union) writer schema.

    An exact match (same type, or same name for named types) wins over a promotion.
    """
    w = _deref(writer, writer_named)
    branches = [_deref(b, reader_named) for b in reader_branches]
    for exact in (True, False):
        for index, branch in enumerate(branches):
            if _top_match(w, branch, exact=exact):
                return index
    return None


def check_pair(reader: JsonSchema, writer: JsonSchema) -> list[Incompatibility]:
    """Return every reason ``reader`` cannot read data written with ``writer`` (empty: ok).

    Both schemas are self-contained and normalized (as in :class:`SchemaVersion.schema`).
    """
    checker = _Checker(collect_named(reader), collect_named(writer))
    checker.check(reader, writer, "")
    return checker.found


def is_compatible(reader: JsonSchema, writer: JsonSchema) -> bool:
    """Return True when ``reader`` can read every datum written with ``writer``."""
    return not check_pair(reader, writer)


class _Checker:
    def __init__(
        self, rnamed: Mapping[str, dict[str, Any]], wnamed: Mapping[str, dict[str, Any]]
    ) -> None:
        self.rnamed = rnamed
        self.wnamed = wnamed
        self.found: list[Incompatibility] = []
        self.active: set[tuple[str, str]] = set()

    def add(self, kind: str, path: str, r: JsonSchema, w: JsonSchema, detail: str = "") -> None:
        self.found.append(Incompatibility(kind, path, type_label(r), type_label(w), detail))

    def check(  # noqa: PLR0911, PLR0912 - one branch per Avro type
        self, r: JsonSchema, w: JsonSchema, path: str
    ) -> None:
        r = _deref(r, self.rnamed)
        w = _deref(w, self.wnamed)
        if isinstance(w, list):
            branches = r if isinstance(r, list) else [r]
            for wb in w:
                index = resolve_branch(wb, branches, self.wnamed, self.rnamed)
                if index is None:
                    if isinstance(r, list):
                        self.add("union-branch", path, r, w, type_label(_deref(wb, self.wnamed)))
                    else:
                        self.add("type", path, r, w)
                        return
                else:
                    self.check(branches[index], wb, path)
            return
        if isinstance(r, list):
            index = resolve_branch(w, r, self.wnamed, self.rnamed)
            if index is None:
                self.add("type", path, r, w)
            else:
                self.check(r[index], w, path)
            return
        wk, rk = _kind(w), _kind(r)
        if wk in PRIMITIVES:
            if rk not in _PROMOTIONS.get(wk, frozenset({wk})):
                self.add("type", path, r, w)
            return
        if wk != rk:
            self.add("type", path, r, w)
            return
        if wk == "array":
            self.check(r["items"], w["items"], f"{path}[]")
            return
        if wk == "map":
            self.check(r["values"], w["values"], f"{path}{{}}")
            return
        if not names_match(w, r):
            self.add("name", path, r, w)
            return
        if wk == "fixed":
            if r["size"] != w["size"]:
                self.add("fixed-size", path, r, w, f"{w['size']} ↔ {r['size']}")
            return
        if wk == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                self.add("enum-symbols", path, r, w, "{" + ", ".join(missing) + "}")
            return
        key = (r["name"], w["name"])
        if key in self.active:  # recursive types: assume compatible while in progress
            return
        self.active.add(key)
        self.record(r, w, path)
        self.active.discard(key)

    def record(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        writer_fields = {f["name"]: f for f in w["fields"]}
        for field in r["fields"]:
            here = f"{path}.{field['name']}" if path else field["name"]
            match = writer_fields.get(field["name"])
            if match is None:
                for alias in field.get("aliases", ()):
                    match = writer_fields.get(alias)
                    if match is not None:
                        break
            if match is None:
                if "default" not in field:
                    self.add("missing-default", here, field["type"], "absent")
                continue
            self.check(field["type"], match["type"], here)


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
                for problem in check_pair(new.schema, old.schema):
                    findings.append(Finding(new.full_name, new.version, old.version, True, problem))
            if mode.forward:
                for problem in check_pair(old.schema, new.schema):
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
