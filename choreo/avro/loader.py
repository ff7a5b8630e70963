"""Load ``.avsc`` files into a registry of versioned, fingerprinted schemas.

Versioning convention
---------------------
One file holds one version of one named type: ``<dir>/.../<Name>.v<N>.avsc`` where
``<Name>`` is the type's simple name and ``N`` a positive integer (``Name.avsc`` without a
version counts as ``v1``). The full name (namespace + name) inside the file stays the same
across versions; the directory layout is free (the example domain uses
``schemas/shop/<area>/``). A new version is a new file; old files are never edited, since
events written with them are still in Kafka.

Named types shared across files (``shop.orders.LineItem``) are referenced by full name;
a reference resolves to the **latest** version of that type in the loaded set, so a file's
self-contained schema (and fingerprint) is computed at load time. Evolve a shared type by
adding a version *and* new versions of the events that use it, so the gate
(:mod:`choreo.avro.compat`) sees the change.

Loading happens in three passes over all files together: collect every defined name,
parse each file into the schema model (:mod:`choreo.avro.parse`: qualifying names,
checking structure, resolving references across files), then expand each into its
self-contained form (:mod:`choreo.avro.expand`: a dependency's definition is inlined at
first use, so files load in any order; cycles are recursion, which lint rejects). Field
defaults are checked, fastavro's ``parse_schema`` validates the JSON form of each, and
its Parsing Canonical Form gives the fingerprint. Each :class:`SchemaVersion` keeps its
parsed model, so nothing downstream parses JSON again.

The loader always includes choreo's built-in schemas (``choreo/avro/builtin/``, e.g.
``choreo.SagaTimedOut``) and, unless told otherwise, runs :mod:`choreo.avro.lint`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fastavro import parse_schema as fastavro_parse_schema
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from choreo.avro.defaults import check_defaults
from choreo.avro.expand import expand
from choreo.avro.jsonform import to_json
from choreo.avro.lint import lint_files
from choreo.avro.model import Named, Primitive, Schema
from choreo.avro.parse import ParsedFile, local_names, parse_file, parse_schema, top_name
from choreo.errors import SchemaError, UnknownEventError

__all__ = [
    "BUILTIN_DIR",
    "LoadedFile",
    "LocalSchemaRegistry",
    "SchemaRegistry",
    "SchemaVersion",
    "load_directory",
    "load_files",
]

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin"
"""choreo's own schemas (``choreo.SagaTimedOut``), always loaded."""

_UNPARSED = Schema(Primitive("null"))

_FILE_RE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\.v(?P<version>[1-9][0-9]*))?\.avsc\Z")


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of one named schema: its self-contained JSON form and its fingerprint.

    ``schema`` is normalized (full names, no ``namespace`` keys) and self-contained (every
    named type it uses is defined inside it); ``model`` is its parsed form, what lint,
    compatibility, codegen and the codec compiler work on. ``fingerprint`` is the CRC-64-AVRO of
    ``canonical_form`` (the Parsing Canonical Form) as an unsigned integer;
    ``fingerprint_bytes`` is the same value as 8 little-endian bytes, as written by the
    single-object encoding.
    """

    full_name: str
    version: int
    schema: dict[str, Any] = field(repr=False, compare=False)
    canonical_form: str = field(repr=False)
    fingerprint: int
    source: str = field(default="", compare=False)
    model: Schema = field(default=_UNPARSED, repr=False, compare=False)
    """The parsed model of ``schema`` (parsed from it when not given)."""

    def __post_init__(self) -> None:
        if self.model is _UNPARSED:
            object.__setattr__(self, "model", parse_schema(self.schema, source=self.source))

    @property
    def fingerprint_bytes(self) -> bytes:
        """Return the fingerprint as 8 little-endian bytes."""
        return self.fingerprint.to_bytes(8, "little")

    @property
    def fingerprint_hex(self) -> str:
        """Return the fingerprint's 8 little-endian bytes in hex (as fastavro and avro show it)."""
        return self.fingerprint_bytes.hex()

    @property
    def name(self) -> str:
        """Return the simple name (the full name without its namespace)."""
        return self.full_name.rpartition(".")[2]

    @property
    def namespace(self) -> str | None:
        """Return the namespace, or None for a name in the null namespace."""
        return self.full_name.rpartition(".")[0] or None

    def to_json(self) -> str:
        """Return the self-contained schema as JSON text (what a Confluent registry stores)."""
        return json.dumps(self.schema, separators=(",", ":"))


@runtime_checkable
class SchemaRegistry(Protocol):
    """What choreo needs from a store of schema versions (local directory or remote)."""

    def get(self, full_name: str, version: int | None = None) -> SchemaVersion:
        """Return one version of a schema (the latest when ``version`` is None)."""
        ...

    def versions(self, full_name: str) -> tuple[SchemaVersion, ...]:
        """Return every version of a schema, oldest first."""
        ...

    def by_fingerprint(self, fingerprint: int | bytes) -> SchemaVersion:
        """Return the schema version whose CRC-64-AVRO fingerprint is ``fingerprint``."""
        ...

    def names(self) -> tuple[str, ...]:
        """Return every full name the registry knows, sorted."""
        ...


class LocalSchemaRegistry:
    """An in-memory :class:`SchemaRegistry` filled from directories of ``.avsc`` files.

    Lookups raise :class:`~choreo.errors.UnknownEventError` for a name, version or
    fingerprint the registry does not hold. Not thread-safe while loading; safe to share
    for lookups once loaded.
    """

    def __init__(self, versions: Iterable[SchemaVersion] = ()) -> None:
        self._by_name: dict[str, dict[int, SchemaVersion]] = {}
        self._latest: dict[str, SchemaVersion] = {}
        self._by_fingerprint: dict[int, SchemaVersion] = {}
        self._files: list[LoadedFile] = []
        for version in versions:
            self.add(version)

    # --- filling ------------------------------------------------------------------

    def add(self, version: SchemaVersion) -> None:
        """Add one schema version; an identical re-add is ignored, a different one fails."""
        known = self._by_name.setdefault(version.full_name, {})
        existing = known.get(version.version)
        if existing is not None:
            if existing.fingerprint != version.fingerprint:
                raise SchemaError(
                    f"{version.full_name} v{version.version} is defined twice with different "
                    f"content ({existing.source} and {version.source})"
                )
            return
        known[version.version] = version
        self._by_name[version.full_name] = dict(sorted(known.items()))
        latest = self._latest.get(version.full_name)
        if latest is None or version.version > latest.version:
            self._latest[version.full_name] = version
        self._by_fingerprint.setdefault(version.fingerprint, version)

    def load_directory(
        self, path: str | Path, *, lint: bool = True, max_depth: int | None = None
    ) -> list[LoadedFile]:
        """Load every ``.avsc`` under ``path`` (recursively) plus the built-ins, and add them.

        Named types are resolved across all files loaded together. Raises
        :class:`SchemaError` naming the file and field of the first broken schema, or
        listing every lint problem.
        """
        root = Path(path)
        if not root.is_dir():
            raise SchemaError(f"{root}: not a directory")
        files = sorted(root.rglob("*.avsc"))
        builtin = sorted(BUILTIN_DIR.rglob("*.avsc"))
        loaded = load_files(
            [*builtin, *(f for f in files if f not in builtin)], lint=lint, max_depth=max_depth
        )
        for item in loaded:
            self.add(item.version)
        self._files.extend(loaded)
        logger.debug("loaded %d schema files from %s", len(loaded), root)
        return loaded

    def register(
        self, schema: str | Mapping[str, Any], *, version: int = 1, source: str = "<memory>"
    ) -> SchemaVersion:
        """Add one schema given as JSON (text or value); references resolve to known names."""
        raw = json.loads(schema) if isinstance(schema, str) else schema
        providers: dict[str, Named] = {}
        for latest in self._latest.values():
            for name, definition in latest.model.named.items():
                providers.setdefault(name, definition)
        for item in self._files:
            providers.update(item.parsed.defined)
        loaded = _load([_Source(source, raw, None, version)], providers, lint=True, max_depth=None)
        self.add(loaded[0].version)
        self._files.extend(loaded)
        return loaded[0].version

    # --- lookups ------------------------------------------------------------------

    def get(self, full_name: str, version: int | None = None) -> SchemaVersion:
        """Return one version of a schema (the latest when ``version`` is None)."""
        if version is None:
            try:
                return self._latest[full_name]
            except KeyError:
                raise UnknownEventError(f"unknown schema `{full_name}`") from None
        try:
            return self._by_name[full_name][version]
        except KeyError:
            raise UnknownEventError(f"unknown schema `{full_name}` v{version}") from None

    def latest(self, full_name: str) -> SchemaVersion:
        """Return the latest version of a schema."""
        return self.get(full_name)

    def versions(self, full_name: str) -> tuple[SchemaVersion, ...]:
        """Return every version of a schema, oldest first."""
        try:
            return tuple(self._by_name[full_name].values())
        except KeyError:
            raise UnknownEventError(f"unknown schema `{full_name}`") from None

    def by_fingerprint(self, fingerprint: int | bytes) -> SchemaVersion:
        """Return the schema version whose CRC-64-AVRO fingerprint is ``fingerprint``."""
        key = (
            int.from_bytes(fingerprint, "little") if isinstance(fingerprint, bytes) else fingerprint
        )
        try:
            return self._by_fingerprint[key]
        except KeyError:
            raise UnknownEventError(f"unknown schema fingerprint {key:016x}") from None

    def names(self) -> tuple[str, ...]:
        """Return every full name the registry knows, sorted."""
        return tuple(sorted(self._by_name))

    @property
    def files(self) -> tuple[LoadedFile, ...]:
        """Return the files loaded so far (what lint and the gate look at)."""
        return tuple(self._files)

    def __contains__(self, full_name: object) -> bool:
        return full_name in self._by_name

    def __iter__(self) -> Iterator[SchemaVersion]:
        for name in sorted(self._by_name):
            yield from self._by_name[name].values()

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())


def load_directory(
    path: str | Path, *, lint: bool = True, max_depth: int | None = None
) -> LocalSchemaRegistry:
    """Return a registry holding every schema under ``path`` plus choreo's built-ins."""
    registry = LocalSchemaRegistry()
    registry.load_directory(path, lint=lint, max_depth=max_depth)
    return registry


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """One loaded file: where it came from, its parsed form and its schema version."""

    source: str
    parsed: ParsedFile = field(repr=False)
    version: SchemaVersion


@dataclass(frozen=True, slots=True)
class _Source:
    label: str
    raw: Any
    stem_name: str | None
    version: int


def load_files(
    paths: Iterable[str | Path], *, lint: bool = True, max_depth: int | None = None
) -> list[LoadedFile]:
    """Load the given ``.avsc`` files together (names resolve across them)."""
    sources = []
    for path in paths:
        p = Path(path)
        match = _FILE_RE.match(p.name)
        if match is None:
            raise SchemaError(f"{p}: file name must be <Name>.v<N>.avsc (N = 1, 2, ...)")
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaError(f"{p}: cannot read JSON: {exc}") from exc
        sources.append(_Source(str(p), raw, match["name"], int(match["version"] or 1)))
    return _load(sources, {}, lint=lint, max_depth=max_depth)


def _index_sources(sources: list[_Source]) -> tuple[dict[str, dict[int, _Source]], set[str]]:
    """Return the versions of each top-level name and every nested name, checking files."""
    top: dict[str, dict[int, _Source]] = {}
    nested_names: set[str] = set()
    for src in sources:
        name = top_name(src.raw, src.label)
        if src.stem_name is not None and name.rpartition(".")[2] != src.stem_name:
            raise SchemaError(
                f"{src.label}: defines `{name}` but the file is named for `{src.stem_name}`"
            )
        versions = top.setdefault(name, {})
        if src.version in versions:
            raise SchemaError(
                f"{src.label}: `{name}` v{src.version} is also defined in "
                f"{versions[src.version].label}"
            )
        versions[src.version] = src
        nested_names |= local_names(src.raw, src.label) - {name}
    return top, nested_names


class _Lookup:
    """Where a reference of one file finds its definition: the file, the latest version of
    a top-level name, a type nested in another file, or the external providers."""

    def __init__(
        self,
        latest_top: dict[str, Named],
        nested: dict[str, Named],
        external: Mapping[str, Named],
    ) -> None:
        self.latest_top = latest_top
        self.nested = nested
        self.external = external

    def for_file(self, parsed: ParsedFile) -> Callable[[str], Named]:
        def lookup(name: str) -> Named:
            for table in (parsed.defined, self.latest_top, self.nested, self.external):
                found = table.get(name)
                if found is not None:
                    return found
            raise SchemaError(f"{parsed.source}: unknown type `{name}`")

        return lookup


def _load(
    sources: list[_Source],
    external: Mapping[str, Named],
    *,
    lint: bool,
    max_depth: int | None,
) -> list[LoadedFile]:
    top, nested_names = _index_sources(sources)

    def is_known(fullname: str) -> bool:
        return fullname in top or fullname in nested_names or fullname in external

    parsed = [parse_file(src.raw, source=src.label, is_known=is_known) for src in sources]
    by_source = {src.label: p for src, p in zip(sources, parsed, strict=True)}
    latest_top = {name: by_source[v[max(v)].label].root for name, v in top.items()}
    nested: dict[str, Named] = {}
    for item in parsed:
        for name, definition in item.defined.items():
            if name != item.full_name:
                nested.setdefault(name, definition)
    lookups = _Lookup(latest_top, nested, external)
    loaded: list[LoadedFile] = []
    for src, item in zip(sources, parsed, strict=True):
        model = expand(item.root, lookups.for_file(item), source=src.label)
        check_defaults(model, source=src.label)
        loaded.append(LoadedFile(src.label, item, _make_version(model, src.version, src.label)))
    if lint:
        issues = lint_files(loaded, max_depth=max_depth)
        if issues:
            raise SchemaError("schema lint failed:\n" + "\n".join(f"  {i}" for i in issues))
    return loaded


def _make_version(model: Schema, version: int, source: str) -> SchemaVersion:
    schema = to_json(model)
    try:
        fastavro_parse_schema(schema)
        canonical = to_parsing_canonical_form(schema)
    except Exception as exc:  # fastavro raises several unrelated exception types
        raise SchemaError(f"{source}: {exc}") from exc
    # fastavro renders the fingerprint as the hex of its 8 little-endian bytes
    value = int.from_bytes(bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO")), "little")
    return SchemaVersion(schema["name"], version, schema, canonical, value, source, model)
