"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

:class:`ConfluentCodec` is byte-compatible with confluent-kafka's ``AvroSerializer`` and
``AvroDeserializer``: either side decodes what the other encodes. Schemas come from the
local :class:`~choreo.avro.SchemaRegistry` (what this service writes and reads with);
schema ids come from a ``confluent_kafka.schema_registry.SchemaRegistryClient`` (a real
registry, or ``SchemaRegistryClient.new_client({"url": "mock://..."})`` in tests).

Subjects: ``encode`` has no topic, so the default subject is the record's full name
(Confluent's RecordNameStrategy); pass ``subject_name_strategy`` to choose another. Ids
are looked up (or registered, with ``auto_register``) once per schema version and cached.

Writer schemas fetched by id are untrusted: they are parsed (JSON nesting and size
bounded), resolved (including registry references) and linted (no recursion, bounded
depth), and the decoder compiler measures them against its limits (expansion of named
types, nesting, generated size) before generating anything; a schema failing any of
these is rejected with :class:`~choreo.errors.DecodeError`. The
decode contract is otherwise :mod:`choreo.avro.codec`'s. Registry failures other than "not
found" raise :class:`~choreo.errors.TransportError` (``retriable=True``): a registry that
is down must not turn good records into dead letters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from choreo.avro.codec import DEFAULT_MAX_SIZE, EncoderEntry, _AvroCodec
from choreo.avro.compiler import DEFAULT_MAX_ZERO_SIZE_ITEMS, CompileLimits
from choreo.avro.lint import lint_schema
from choreo.avro.loader import SchemaRegistry, SchemaVersion, _load, _Source
from choreo.errors import (
    DecodeError,
    IncompatibleSchemaError,
    SchemaError,
    TransportError,
    UnknownEventError,
)

__all__ = ["ConfluentCodec", "record_name_strategy"]

logger = logging.getLogger(__name__)

_MAGIC = 0
_HEADER = 5
_MAX_REFERENCES = 100
"""Most schema references (transitively) one writer schema may pull from the registry."""


def record_name_strategy(full_name: str) -> str:
    """Return the subject of a record under Confluent's RecordNameStrategy (its full name)."""
    return full_name


class ConfluentCodec(_AvroCodec):
    """Avro in Confluent's wire format, schema ids from a Schema Registry client.

    Same contract as :class:`~choreo.avro.codec.SingleObjectCodec`; thread-safe once warm.
    """

    header_size = _HEADER

    def __init__(
        self,
        client: Any,
        registry: SchemaRegistry,
        *,
        subject_name_strategy: Callable[[str], str] = record_name_strategy,
        auto_register: bool = True,
        max_size: int = DEFAULT_MAX_SIZE,
        max_zero_size_items: int = DEFAULT_MAX_ZERO_SIZE_ITEMS,
        compile_limits: CompileLimits | None = None,
    ) -> None:
        super().__init__(
            registry,
            max_size=max_size,
            max_zero_size_items=max_zero_size_items,
            compile_limits=compile_limits,
        )
        self.client = client
        self.subject_name_strategy = subject_name_strategy
        self.auto_register = auto_register
        self._writers: dict[int, SchemaVersion] = {}

    # --- encoding: ``00`` + schema id + the Avro body ---------------------------

    def schema_id(self, name: str, version: int | None = None) -> int:
        """Return the registry's id of a schema version (registering it if allowed)."""
        prefix = self._prepare_encoder(name, version)[0]
        return int.from_bytes(prefix[1:], "big")

    def _prepare_encoder(self, name: str, version: int | None) -> EncoderEntry:
        from confluent_kafka.schema_registry import Schema

        schema = self._registry.get(name, version)
        subject = self.subject_name_strategy(schema.full_name)
        remote = Schema(schema.to_json(), "AVRO")
        try:
            if self.auto_register:
                schema_id = int(self.client.register_schema(subject, remote))
            else:
                schema_id = int(self.client.lookup_schema(subject, remote).schema_id)
        except Exception as exc:
            raise _registry_error(exc, f"{schema.full_name} v{schema.version}") from exc
        entry = (bytes([_MAGIC]) + schema_id.to_bytes(4, "big"), self._encoder_for(schema), schema)
        self._remember_encoder(name, version, entry)
        self._writers.setdefault(schema_id, schema)
        return entry

    # --- decoding: the writer schema is fetched by id, once ----------------------

    def _writer(self, data: bytes) -> SchemaVersion:
        if len(data) < _HEADER:
            raise DecodeError(f"payload of {len(data)} bytes is shorter than the header", data)
        if data[0] != _MAGIC:
            raise DecodeError(f"not in Confluent wire format (magic byte {data[0]})", data)
        schema_id = int.from_bytes(data[1:_HEADER], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch_writer(schema_id, data)
            self._writers[schema_id] = writer
        return writer

    def _fetch_writer(self, schema_id: int, data: bytes) -> SchemaVersion:
        try:
            remote = self.client.get_schema(schema_id)
        except Exception as exc:
            error = _registry_error(exc, f"schema id {schema_id}")
            if isinstance(error, UnknownEventError):
                raise DecodeError(f"unknown schema id {schema_id}", data) from exc
            raise error from exc
        if (remote.schema_type or "AVRO") != "AVRO":
            raise DecodeError(f"schema id {schema_id} is {remote.schema_type}, not AVRO", data)
        try:
            sources = self._reference_sources(remote, set())
            sources.append(
                _Source(f"schema id {schema_id}", json.loads(remote.schema_str), None, 1)
            )
            loaded = _load(sources, {}, lint=False, max_depth=None)
        except (SchemaError, ValueError, TypeError, RecursionError) as exc:  # JSON errors too
            raise DecodeError(
                f"schema id {schema_id} is not a usable Avro schema: {exc!s:.300}", data
            ) from exc
        version = loaded[-1].version
        issues = lint_schema(version.model, source=version.source, require_namespace=False)
        if issues:
            raise DecodeError(f"schema id {schema_id} rejected: {issues[0]}", data)
        try:
            # the same schema known locally: report its version number
            return self._registry.by_fingerprint(version.fingerprint)
        except UnknownEventError:
            return SchemaVersion(
                version.full_name,
                0,
                version.schema,
                version.canonical_form,
                version.fingerprint,
                version.source,
                version.model,
            )

    def _reference_sources(self, remote: Any, seen: set[tuple[str, int]]) -> list[_Source]:
        sources: list[_Source] = []
        for ref in remote.references or ():
            key = (ref.subject, ref.version)
            if key in seen:
                continue
            if len(seen) >= _MAX_REFERENCES:
                raise SchemaError(f"more than {_MAX_REFERENCES} schema references")
            seen.add(key)
            try:
                registered = self.client.get_version(ref.subject, ref.version)
            except Exception as exc:
                raise _registry_error(exc, f"reference {ref.name}") from exc
            sources.extend(self._reference_sources(registered.schema, seen))
            sources.append(
                _Source(
                    f"{ref.subject} v{ref.version}",
                    json.loads(registered.schema.schema_str),
                    None,
                    1,
                )
            )
        return sources


def _registry_error(exc: Exception, what: str) -> Exception:
    """Translate a Schema Registry client exception into choreo's errors."""
    status = getattr(exc, "http_status_code", None)
    if status == 404:
        return UnknownEventError(f"{what}: not found in the schema registry")
    if status == 409:
        return IncompatibleSchemaError(f"{what}: rejected by the schema registry: {exc}")
    if status is not None and 400 <= status < 500:
        return SchemaError(f"{what}: the schema registry refused it: {exc}")
    return TransportError(f"{what}: schema registry error: {exc}", retriable=True)
