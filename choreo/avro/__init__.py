"""Avro schemas on disk: load, lint, fingerprint, check evolution, generate classes.

- :mod:`choreo.avro.loader`: ``.avsc`` files → :class:`LocalSchemaRegistry` of
  :class:`SchemaVersion` (self-contained JSON, Parsing Canonical Form, CRC-64-AVRO
  fingerprint); the versioning convention is documented there.
- :mod:`choreo.avro.lint`: recursion, nesting depth, name clashes, namespaces.
- :mod:`choreo.avro.compat`: Avro resolution rules and the evolution gate.
- :mod:`choreo.avro.codegen`: typed event classes from schemas.
- :mod:`choreo.avro.model`: the normalized JSON form all of them share.
"""

from choreo.avro.compat import (
    CompatibilityMode,
    Finding,
    Incompatibility,
    check_pair,
    check_registry,
    check_versions,
    is_compatible,
)
from choreo.avro.lint import DEFAULT_MAX_DEPTH, LintIssue, lint_files, lint_schema
from choreo.avro.loader import (
    BUILTIN_DIR,
    LoadedFile,
    LocalSchemaRegistry,
    SchemaRegistry,
    SchemaVersion,
    load_directory,
    load_files,
)

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_MAX_DEPTH",
    "CompatibilityMode",
    "Finding",
    "Incompatibility",
    "LintIssue",
    "LoadedFile",
    "LocalSchemaRegistry",
    "SchemaRegistry",
    "SchemaVersion",
    "check_pair",
    "check_registry",
    "check_versions",
    "is_compatible",
    "lint_files",
    "lint_schema",
    "load_directory",
    "load_files",
]
