"""Avro codecs: event payloads (a record's value) to bytes and back.

:class:`SingleObjectCodec` writes the Avro specification's *single-object encoding*:
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema, then the
Avro binary body. A reader finds the writer schema by fingerprint in a
:class:`~choreo.avro.SchemaRegistry` and resolves it against its own (reader) schema,
so a v2 reader reads v1 events and, where the evolution rules allow, the reverse.
:class:`choreo.avro.confluent.ConfluentCodec` writes Confluent's wire format instead.

The decode contract, for bytes from anywhere:

- the only exception is :class:`~choreo.errors.DecodeError` (``.raw`` keeps the bytes);
- input longer than ``max_size`` (default 1 MiB) is rejected before any work;
- no length, count or block size may claim more than the remaining bytes, and arrays of
  zero-byte items are capped, so memory and time stay proportional to the input;
- what the Avro specification calls invalid is rejected rather than decoded into a
  different value: a wrong marker, an unknown fingerprint, trailing bytes after the body,
  a union or enum index out of range, a boolean byte other than 0/1, invalid UTF-8, a
  varint longer than 10 bytes (or overflowing 64 bits), an ``int`` outside 32 bits;
- nesting depth is bounded: schemas are linted at load (no recursion, depth ≤ 8), and a
  foreign writer schema is measured against the compiler's limits before any code is
  generated for it (:class:`~choreo.avro.compiler.CompileLimits`).

Encoders and decoders are compiled once per schema and per (writer, reader) pair by
:mod:`choreo.avro.compiler` and cached, so the hot path is a dict lookup and a call.
The codec caches what it looked up in the registry: fill the registry before first use.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from choreo.avro.compiler import (
    DEFAULT_MAX_ZERO_SIZE_ITEMS,
    ENCODE_ERRORS,
    CompileLimits,
    DecodeLimits,
    Decoder,
    Encoder,
    InvalidBodyError,
    ObjectField,
    RecordBuilders,
    ResolutionError,
    compile_decoder,
    compile_encoder,
    compile_object_encoder,
    compile_reader,
    explain_encode_problem,
)
from choreo.avro.loader import SchemaRegistry, SchemaVersion
from choreo.errors import DecodeError, EncodeError, SchemaError, UnknownEventError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "SINGLE_OBJECT_MARKER",
    "Codec",
    "RecordBuilders",
    "SingleObjectCodec",
]

logger = logging.getLogger(__name__)

SINGLE_OBJECT_MARKER = b"\xc3\x01"
DEFAULT_MAX_SIZE = 1 << 20
"""Default cap on an encoded payload, in bytes (1 MiB, Kafka's default record size)."""

_HEADER = 10
_ENCODE_ERRORS = ENCODE_ERRORS
_DECODE_ERRORS = (
    InvalidBodyError,
    IndexError,
    struct.error,
    UnicodeDecodeError,
    ValueError,  # raised by record builders (e.g. an enum class lacking a symbol)
    TypeError,
    RecursionError,  # not expected (depth is bounded at compile time); never let it out
    MemoryError,
)


@runtime_checkable
class Codec(Protocol):
    """Turns Avro datums (dicts) into bytes and back; the runtime's only view of Avro."""

    @property
    def registry(self) -> SchemaRegistry:
        """Return the registry whose schemas this codec reads and writes."""
        ...

    def encode(self, name: str, datum: Mapping[str, Any], version: int | None = None) -> bytes:
        """Return the encoded bytes of ``datum`` written with schema ``name`` (latest version)."""
        ...

    def decode(self, data: bytes, reader_name: str, builders: RecordBuilders | None = None) -> Any:
        """Return the datum in ``data`` resolved to the latest schema named ``reader_name``.

        Records are dicts, or what ``builders`` makes of them (see :class:`RecordBuilders`).
        """
        ...

    def decode_any(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return the writer schema's full name and the datum as written."""
        ...

    def writer_name(self, data: bytes) -> str:
        """Return the full name of the schema ``data`` was written with, without decoding."""
        ...


def _failing_decoder(message: str) -> Decoder:
    def fail(b: bytes, p: int) -> Any:
        raise InvalidBodyError(message)

    return fail


EncoderEntry = tuple[bytes, Encoder, SchemaVersion]
"""What encoding under one schema version needs: the header, the encoder, the schema."""


class _AvroCodec:
    """The encode and decode paths both wire formats share, with their caches.

    A payload is a header of ``header_size`` bytes naming the writer schema, then the
    Avro body. A subclass says how to build the header and encoder of a schema
    (:meth:`_prepare_encoder`, which stores the entry with :meth:`_remember_encoder`) and
    how to find the writer schema of a header (:meth:`_writer`); the rest is here.
    """

    header_size: int

    def __init__(
        self,
        registry: SchemaRegistry,
        *,
        max_size: int,
        max_zero_size_items: int,
        compile_limits: CompileLimits | None,
    ) -> None:
        self._registry = registry
        self.max_size = max_size
        self._limits = DecodeLimits(max_zero_size_items, compile_limits or CompileLimits())
        self._latest: dict[str, EncoderEntry] = {}
        self._versioned: dict[tuple[str, int], EncoderEntry] = {}
        self._encoders: dict[int, Encoder] = {}
        self._decoders: dict[tuple[bytes, str, RecordBuilders | None], Decoder] = {}
        self._any: dict[bytes, tuple[str, Decoder]] = {}
        self._decoder_cache: dict[tuple[int, int, RecordBuilders | None], Decoder] = {}
        self._readers: dict[tuple[int, RecordBuilders | None], Callable[[bytes], Any]] = {}

    @property
    def registry(self) -> SchemaRegistry:
        """Return the local registry whose schemas this codec writes and reads with."""
        return self._registry

    # --- encoding ---------------------------------------------------------------

    def encode(self, name: str, datum: Mapping[str, Any], version: int | None = None) -> bytes:
        """Return the header + the Avro body of ``datum`` under schema ``name``."""
        try:
            prefix, encoder, schema = (
                self._latest[name] if version is None else self._versioned[(name, version)]
            )
        except KeyError:
            prefix, encoder, schema = self._prepare_encoder(name, version)
        out = bytearray(prefix)
        try:
            encoder(datum, out)
        except _ENCODE_ERRORS as exc:
            raise encode_error(schema, datum, exc) from exc
        if len(out) > self.max_size:
            raise EncodeError(
                f"{name}: encoded size {len(out)} exceeds the limit of {self.max_size} bytes"
            )
        return bytes(out)

    def object_encoder(
        self,
        name: str,
        fields: Mapping[str, ObjectField],
        to_datum: Callable[[Any], Mapping[str, Any]],
    ) -> Callable[[Any], bytes] | None:
        """Return a function equal to ``encode(name, to_datum(obj))`` that skips the datum.

        ``fields`` says which attribute of the object holds each field of schema ``name``
        (latest version) and how its value converts (see
        :func:`~choreo.avro.compiler.compile_object_encoder`); ``to_datum`` is only called
        to explain a value that does not fit, so errors read as ``encode``'s. Returns None
        when the schema cannot be written that way (``encode`` then must be used).
        """
        try:
            prefix, _, schema = self._latest[name]
        except KeyError:
            prefix, _, schema = self._prepare_encoder(name, None)
        limit = self.max_size

        def fail(obj: Any, exc: Exception) -> Exception:
            return encode_error(schema, to_datum(obj), exc)

        def too_big(size: int) -> Exception:
            return EncodeError(f"{name}: encoded size {size} exceeds the limit of {limit} bytes")

        try:
            return compile_object_encoder(
                schema.model,
                fields,
                prefix=prefix,
                max_size=limit,
                fail=fail,
                too_big=too_big,
                limits=self._limits.compile,
            )
        except SchemaError:
            return None

    def _prepare_encoder(self, name: str, version: int | None) -> EncoderEntry:
        """Return (and remember) the header, encoder and schema of ``name`` at ``version``."""
        raise NotImplementedError

    def _remember_encoder(self, name: str, version: int | None, entry: EncoderEntry) -> None:
        """Cache ``entry`` as what ``encode(name, ..., version)`` writes with."""
        if version is None:
            self._latest[name] = entry
        else:
            self._versioned[(name, version)] = entry

    def _encoder_for(self, schema: SchemaVersion) -> Encoder:
        """Return the compiled encoder of ``schema``, compiled once per fingerprint."""
        encoder = self._encoders.get(schema.fingerprint)
        if encoder is None:
            encoder = compile_encoder(schema.model, self._limits.compile)
            self._encoders[schema.fingerprint] = encoder
        return encoder

    # --- decoding ---------------------------------------------------------------

    def decode(self, data: bytes, reader_name: str, builders: RecordBuilders | None = None) -> Any:
        """Return the datum in ``data``, resolved to the latest schema named ``reader_name``.

        Records are dicts unless ``builders`` names a callable building them.
        """
        if data.__class__ is not bytes:
            data = _as_bytes(data)
        if len(data) > self.max_size:
            raise DecodeError(f"payload of {len(data)} bytes exceeds {self.max_size}", data)
        header = self.header_size
        decoder = self._decoders.get((data[:header], reader_name, builders))
        if decoder is None:
            decoder = self._prepare_decoder(data, reader_name, builders)
        try:
            return decoder(data, header)
        except _DECODE_ERRORS as exc:
            raise _decode_error(exc, data) from exc

    def reader_for(
        self, reader_name: str, builders: RecordBuilders | None = None
    ) -> Callable[[bytes], Any]:
        """Return a function equal to ``decode(data, reader_name, builders)``.

        Payloads written with the reader's own (latest) schema, the common case, skip the
        lookup of their decoder; every other payload goes through :meth:`decode`. Same
        checks, same errors.
        """
        slow = self.decode
        header = self._header_of(reader_name)
        if header is None:
            return lambda data: slow(data, reader_name, builders)
        schema = self.registry.get(reader_name)
        key = (schema.fingerprint, builders)
        found = self._readers.get(key)
        if found is not None:
            return found
        try:  # the decoder and its entry checks in one function (no call per payload)
            compiled = compile_reader(
                schema.model,
                header=header,
                max_size=self.max_size,
                slow=lambda data: slow(data, reader_name, builders),
                errors=_DECODE_ERRORS,
                on_error=_decode_error,
                limits=self._limits,
                builders=builders,
            )
        except SchemaError:  # rejected by the compile limits: decode() says so per payload
            return self._checked_reader(reader_name, builders, header)
        self._readers[key] = compiled
        return compiled

    def _checked_reader(
        self, reader_name: str, builders: RecordBuilders | None, header: bytes
    ) -> Callable[[bytes], Any]:
        """Return ``reader_for``'s function as a call of the cached decoder behind the checks."""
        slow = self.decode
        schema = self.registry.get(reader_name)
        decoder = self._decoder_for(schema, schema, builders)
        start, limit = self.header_size, self.max_size

        def read(data: bytes) -> Any:
            if data.__class__ is bytes and data.startswith(header) and len(data) <= limit:
                try:
                    return decoder(data, start)
                except _DECODE_ERRORS as exc:
                    raise _decode_error(exc, data) from exc
            return slow(data, reader_name, builders)

        return read

    def _header_of(self, name: str) -> bytes | None:
        """Return the header of payloads written with ``name``'s latest schema (None: unknown)."""
        return None

    def decode_any(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return the writer schema's full name and the datum as written (no reader schema)."""
        if data.__class__ is not bytes:
            data = _as_bytes(data)
        if len(data) > self.max_size:
            raise DecodeError(f"payload of {len(data)} bytes exceeds {self.max_size}", data)
        header = self.header_size
        entry = self._any.get(data[:header])
        if entry is None:
            writer = self._writer(data)
            entry = (writer.full_name, self._decoder_for(writer, None))
            self._any[data[:header]] = entry
        try:
            datum: dict[str, Any] = entry[1](data, header)
        except _DECODE_ERRORS as exc:
            raise _decode_error(exc, data) from exc
        return entry[0], datum

    def writer_name(self, data: bytes) -> str:
        """Return the full name of the schema ``data`` was written with, without decoding."""
        return self.writer_schema(data).full_name

    def writer_schema(self, data: bytes) -> SchemaVersion:
        """Return the schema version ``data`` was written with (named by its header)."""
        return self._writer(_as_bytes(data))

    def _writer(self, data: bytes) -> SchemaVersion:
        """Return the writer schema the header of ``data`` names, or raise DecodeError."""
        raise NotImplementedError

    def _prepare_decoder(
        self, data: bytes, reader_name: str, builders: RecordBuilders | None
    ) -> Decoder:
        writer = self._writer(data)
        reader = self.registry.get(reader_name)
        decoder = self._decoder_for(writer, reader, builders)
        self._decoders[(data[: self.header_size], reader_name, builders)] = decoder
        return decoder

    def _decoder_for(
        self,
        writer: SchemaVersion,
        reader: SchemaVersion | None,
        builders: RecordBuilders | None = None,
    ) -> Decoder:
        key = (
            writer.fingerprint,
            reader.fingerprint if reader is not None else writer.fingerprint,
            builders,
        )
        decoder = self._decoder_cache.get(key)
        if decoder is None:
            decoder = build_decoder(writer, reader, self._limits, builders)
            self._decoder_cache[key] = decoder
        return decoder


class SingleObjectCodec(_AvroCodec):
    """Avro single-object encoding over a :class:`~choreo.avro.SchemaRegistry`.

    ``encode`` raises :class:`~choreo.errors.EncodeError` when the datum does not fit the
    schema (naming the field) or the result exceeds ``max_size``, and
    :class:`~choreo.errors.UnknownEventError` for an unknown schema name. ``decode``
    raises :class:`~choreo.errors.DecodeError` for anything wrong with the bytes and
    :class:`~choreo.errors.UnknownEventError` for an unknown reader name. Thread-safe.
    ``compile_limits`` bounds the schemas codecs are compiled for (see
    :class:`~choreo.avro.compiler.CompileLimits`); a writer schema over them makes its
    records fail with ``DecodeError``.
    """

    header_size = _HEADER

    def __init__(
        self,
        registry: SchemaRegistry,
        *,
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

    def schema_for(self, name: str, version: int | None = None) -> SchemaVersion:
        """Return the schema version ``encode(name, ..., version)`` writes with."""
        return self._prepare_encoder(name, version)[2]

    def _prepare_encoder(self, name: str, version: int | None) -> EncoderEntry:
        schema = self.registry.get(name, version)
        entry = (SINGLE_OBJECT_MARKER + schema.fingerprint_bytes, self._encoder_for(schema), schema)
        self._remember_encoder(name, version, entry)
        return entry

    def _header_of(self, name: str) -> bytes:
        return SINGLE_OBJECT_MARKER + self.registry.get(name).fingerprint_bytes

    def _writer(self, data: bytes) -> SchemaVersion:
        if len(data) < _HEADER:
            raise DecodeError(f"payload of {len(data)} bytes is shorter than the header", data)
        if data[:2] != SINGLE_OBJECT_MARKER:
            raise DecodeError(f"not single-object encoded (marker {data[:2].hex()})", data)
        try:
            return self.registry.by_fingerprint(data[2:_HEADER])
        except UnknownEventError:
            raise DecodeError(f"unknown schema fingerprint {data[2:_HEADER].hex()}", data) from None


def encode_error(schema: SchemaVersion, datum: Any, exc: Exception) -> EncodeError:
    """Return the EncodeError explaining which field of ``datum`` does not fit ``schema``."""
    try:
        why = explain_encode_problem(schema.model, datum)
    except Exception:  # explaining must never hide the original error
        why = str(exc)
    return EncodeError(f"{schema.full_name} v{schema.version}: {why}")


def build_decoder(
    writer: SchemaVersion,
    reader: SchemaVersion | None,
    limits: DecodeLimits,
    builders: RecordBuilders | None = None,
) -> Decoder:
    """Return the compiled decoder of a writer/reader pair, or one that always fails.

    A pair that cannot be resolved (say, a reader field without default that the writer
    lacks) yields a decoder raising ``InvalidBodyError`` with the reason, so every record
    written that way is rejected the same way without recompiling.
    """
    same = reader is None or reader.fingerprint == writer.fingerprint
    try:
        return compile_decoder(
            writer.model,
            None if same or reader is None else reader.model,
            limits=limits,
            builders=builders,
        )
    except ResolutionError as exc:
        assert reader is not None
        message = (
            f"{writer.full_name} v{writer.version} cannot be read as "
            f"{reader.full_name} v{reader.version}: {exc}"
        )
        logger.warning("%s", message)
        return _failing_decoder(message)
    except SchemaError as exc:
        return _failing_decoder(f"writer schema rejected: {exc}")


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise DecodeError(f"expected bytes, got {type(data).__name__}", None)


def _decode_error(exc: Exception, data: bytes) -> DecodeError:
    if isinstance(exc, InvalidBodyError):
        reason = str(exc)
    elif isinstance(exc, IndexError | struct.error):
        reason = "truncated body"
    elif isinstance(exc, UnicodeDecodeError):
        reason = f"invalid UTF-8 in a string ({exc.reason})"
    else:
        reason = f"cannot build the value: {exc!r}"
    return DecodeError(f"cannot decode payload: {reason}", data)
