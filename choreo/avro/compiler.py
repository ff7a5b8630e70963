"""Compile Avro schemas into specialised, validating binary encoders and decoders.

Why not call ``fastavro.schemaless_reader`` on untrusted bytes? fastavro's reader is fast
but lenient: it maps any non-zero byte to ``True``, reads varints of any length (silently
overflowing), turns a negative string length into "the rest of the buffer", lets a
negative union index pick a branch from the end, and loops over an array count claimed by
the bytes before noticing they are missing. choreo must reject all of these (the decode
contract in :mod:`choreo.avro.codec`), and a separate validating pre-scan in Python would
cost as much as the decode itself.

So choreo generates, once per schema (encoders) and once per (writer, reader) pair
(decoders), a straight-line Python function with every field inlined: no per-field
dispatch, no dict lookups of schema attributes, varints read with one comparison in the
common one-byte case. The result validates everything the Avro specification calls
invalid *and* runs faster than fastavro's generic Cython reader and writer on typical event
schemas (see ``bench/bench_codec.py``). Schema resolution (reader vs writer: promotions,
field matching by name and alias, defaults, enum defaults, unions) is compiled in too,
following the same rules as :mod:`choreo.avro.compat`.

Foreign schemas are bounded before any code is generated (:class:`CompileLimits`:
expansion of named types, nesting, generated size), and generated source never embeds
text from a schema except field names through ``repr``; everything else is a constant of
the function's namespace, so a hostile schema can neither exhaust memory nor inject code.

Values follow fastavro's conventions: records are dicts, arrays lists, maps dicts, enums
their symbol strings, bytes and fixed ``bytes``; logical types are not converted
(``timestamp-millis`` stays an ``int`` of milliseconds, ``decimal`` stays bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from choreo.avro.codesource import (
    CompileLimitError,
    CompileLimits,
    DatumMismatchError,
    InvalidBodyError,
    ResolutionError,
    Source,
    check_limits,
    min_encoded_size,
)
from choreo.avro.gen_decoder import DecoderGen
from choreo.avro.gen_encoder import EncoderGen
from choreo.avro.gen_encoder import explain_encode_problem as _explain
from choreo.avro.model import Schema
from choreo.avro.parse import as_schema

__all__ = [
    "DEFAULT_MAX_ZERO_SIZE_ITEMS",
    "CompileLimitError",
    "CompileLimits",
    "DatumMismatchError",
    "DecodeLimits",
    "Decoder",
    "Encoder",
    "InvalidBodyError",
    "RecordBuilders",
    "ResolutionError",
    "compile_decoder",
    "compile_encoder",
    "explain_encode_problem",
    "min_encoded_size",
]

Encoder = Callable[[Any, bytearray], None]
"""Appends the Avro binary body of a datum to a bytearray."""

Decoder = Callable[[bytes, int], Any]
"""Decodes the Avro binary body starting at an offset; the body must end the buffer."""

DEFAULT_MAX_ZERO_SIZE_ITEMS = 1 << 20
"""Default cap on items of zero-byte types (``null``, empty records) in one payload."""


_DEFAULT_COMPILE_LIMITS = CompileLimits()


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds a decoder enforces beyond the byte count, and the bounds of compiling it."""

    max_zero_size_items: int = DEFAULT_MAX_ZERO_SIZE_ITEMS
    compile: CompileLimits = _DEFAULT_COMPILE_LIMITS


class RecordBuilders:
    """Callables that build reader records instead of dicts, by record full name.

    Each callable takes the record's field values positionally, in the reader schema's
    field order. Instances hash by identity, so a codec can cache decoders per instance.
    """

    __slots__ = ("by_name",)

    def __init__(self, by_name: Mapping[str, Callable[..., Any]]) -> None:
        self.by_name = dict(by_name)


def compile_encoder(schema: Schema | Any, limits: CompileLimits | None = None) -> Encoder:
    """Return a function appending the Avro binary encoding of a datum to a bytearray.

    ``schema`` is a model or self-contained JSON. Raises :class:`~choreo.errors.SchemaError`
    (:class:`CompileLimitError` naming the limit) for a recursive schema or one over
    ``limits``. The function raises :class:`DatumMismatchError`, ``TypeError``,
    ``ValueError``, ``KeyError``, ``AttributeError``, ``OverflowError`` or ``struct.error``
    on a datum that does not fit; callers turn these into ``EncodeError`` via
    :func:`explain_encode_problem`.
    """
    model = as_schema(schema)
    bounds = limits or CompileLimits()
    check_limits(model, bounds, "writer")
    src = Source(bounds)
    src.emit(1, "ap = out.append")
    EncoderGen(model, src).visit(model.root, ("datum", 1))
    src.emit(1, "return None")
    encoder: Encoder = src.build("encode", "datum, out")
    return encoder


def compile_decoder(
    writer: Schema | Any,
    reader: Schema | Any | None = None,
    *,
    limits: DecodeLimits | None = None,
    builders: RecordBuilders | None = None,
    stream: bool = False,
) -> Decoder:
    """Return a validating decoder of ``writer``-encoded bodies, resolved to ``reader``.

    ``reader`` None means "read as written". Both are models or self-contained JSON.
    Before generating code, both schemas are checked against ``limits.compile``: a
    recursive schema, or one whose expansion, nesting or generated code is over a limit,
    raises :class:`~choreo.errors.SchemaError` (:class:`CompileLimitError` names the
    limit); a pair that cannot be resolved at all raises :class:`ResolutionError`.

    The decoder raises :class:`InvalidBodyError`, ``IndexError`` (truncated input),
    ``struct.error`` or ``UnicodeDecodeError`` on invalid bytes; it never loops or
    allocates more than the input size allows (arrays of zero-byte items are capped by
    ``limits``). With ``builders``, reader records they name are built by those callables
    (which may raise ``ValueError``/``TypeError``). With ``stream``, the body need not end
    the buffer: the decoder returns ``(value, offset after it)``, for buffers holding
    several bodies in a row (as a container file's block does).
    """
    bounds = limits or DecodeLimits()
    wmodel = as_schema(writer)
    check_limits(wmodel, bounds.compile, "writer")
    rmodel = wmodel if reader is None else as_schema(reader)
    if rmodel is not wmodel:
        check_limits(rmodel, bounds.compile, "reader")
    src = Source(bounds.compile)
    src.emit(1, "end = len(b)")
    gen = DecoderGen(
        wmodel, src, bounds.max_zero_size_items, builders.by_name if builders else {}
    )
    result = gen.value(wmodel.root, (rmodel.root, rmodel), 1, "")
    if gen.uses_budget:
        src.lines.insert(1, f"    zb = {bounds.max_zero_size_items}")
    if stream:
        src.emit(1, f"return {result}, p")
    else:
        src.emit(1, "if p != end:")
        src.emit(2, "raise _InvalidBodyError('trailing bytes after the body')")
        src.emit(1, f"return {result}")
    decoder: Decoder = src.build("decode", "b, p")
    return decoder


def explain_encode_problem(schema: Schema | Any, datum: Any) -> str:
    """Return where and why ``datum`` does not fit ``schema`` (the slow path of errors)."""
    return _explain(as_schema(schema), datum)
