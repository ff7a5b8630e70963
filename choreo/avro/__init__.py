"""choreo's Avro layer: schemas on disk, the schema model, compatibility, codecs.

- :mod:`choreo.avro.model`: the parsed, immutable schema model and its visitor;
  :mod:`choreo.avro.parse` reads JSON into it, :mod:`choreo.avro.jsonform` writes it back.
- :mod:`choreo.avro.loader`: ``.avsc`` files → :class:`LocalSchemaRegistry` of
  :class:`SchemaVersion` (self-contained JSON, Parsing Canonical Form, CRC-64-AVRO
  fingerprint); the versioning convention is documented there.
- :mod:`choreo.avro.lint`: recursion, nesting depth, name clashes, namespaces.
- :mod:`choreo.avro.compat`: Avro resolution rules and the evolution gate.
- :mod:`choreo.avro.codegen`: typed event classes from schemas.
- :mod:`choreo.avro.codec` (single-object encoding), :mod:`choreo.avro.confluent`
  (Confluent wire format), :mod:`choreo.avro.compiler` (the validating encoders and
  decoders they run), :mod:`choreo.avro.serde` (typed events over a codec).
- :mod:`choreo.avro.container`: the bounded reader of Avro object container files.
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
