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

import keyword
import struct
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
from choreo.avro.defaults import default_value
from choreo.avro.gen_decoder import DecoderGen
from choreo.avro.gen_encoder import EncoderGen
from choreo.avro.gen_encoder import explain_encode_problem as _explain
from choreo.avro.gen_flat_encoder import emit_flat_fields, is_flat
from choreo.avro.model import Field, Record, Schema
from choreo.avro.parse import as_schema

__all__ = [
    "DEFAULT_MAX_ZERO_SIZE_ITEMS",
    "ENCODE_ERRORS",
    "CompileLimitError",
    "CompileLimits",
    "DatumMismatchError",
    "DecodeLimits",
    "Decoder",
    "Encoder",
    "InvalidBodyError",
    "ObjectField",
    "RecordBuilders",
    "ResolutionError",
    "compile_decoder",
    "compile_encoder",
    "compile_object_encoder",
    "compile_reader",
    "explain_encode_problem",
    "min_encoded_size",
]

Encoder = Callable[[Any, bytearray], None]
"""Appends the Avro binary body of a datum to a bytearray."""

Decoder = Callable[[bytes, int], Any]
"""Decodes the Avro binary body starting at an offset; the body must end the buffer."""

ENCODE_ERRORS: tuple[type[Exception], ...] = (
    DatumMismatchError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    OverflowError,
    IndexError,
    struct.error,
)
"""What a compiled encoder raises on a datum that does not fit its schema."""

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


ObjectField = tuple[str, "Callable[[Any], Any] | None"]
"""Where an object holds a record field: the attribute, and the function converting its
value to the Avro datum's (None: the value as is)."""


def compile_object_encoder(
    schema: Schema | Any,
    fields: Mapping[str, ObjectField],
    *,
    prefix: bytes,
    max_size: int,
    fail: Callable[[Any, Exception], Exception],
    too_big: Callable[[int], Exception],
    limits: CompileLimits | None = None,
) -> Callable[[Any], bytes] | None:
    """Return a function encoding an object's attributes as ``prefix`` + a record's body.

    The same validating code :func:`compile_encoder` generates for the record's fields,
    but each field is read from the object's attribute named in ``fields`` (by Avro field
    name; a field the object lacks is written with its default) instead of from a dict,
    so no intermediate datum is built. On a value that does not fit, the function raises
    ``fail(obj, error)``; when the result is longer than ``max_size``, ``too_big(size)``.
    Returns None when the root is not a record, a field without default has no
    attribute, or an attribute is not an identifier; raises
    :class:`~choreo.errors.SchemaError` as :func:`compile_encoder` does.
    """
    model = as_schema(schema)
    bounds = limits or CompileLimits()
    check_limits(model, bounds, "writer")
    root = model.resolve(model.root)
    if not isinstance(root, Record):
        return None
    src = Source(bounds)
    src.namespace.update(_P=prefix, _fail=fail, _too_big=too_big, _ENCODE_ERRORS=ENCODE_ERRORS)
    reads: list[tuple[Field, str]] = []
    for field in root.fields:
        spec = fields.get(field.name)
        if spec is None:
            if not field.has_default:
                return None
            value = default_value(model, field.type, field.default)
            reads.append((field, src.const(value, "D")))
            continue
        attr, convert = spec
        if not attr.isidentifier() or keyword.iskeyword(attr):
            return None
        read = f"datum.{attr}"
        reads.append((field, read if convert is None else f"{src.const(convert, 'C')}({read})"))
    flat = is_flat(model, root.fields)
    if not flat:
        src.emit(1, "out = bytearray(_P)")
        src.emit(1, "ap = out.append")
    src.emit(1, "try:")
    if flat:  # bytes joined once (see choreo.avro.gen_flat_encoder)
        emit_flat_fields(src, model, reads)
    else:
        gen = EncoderGen(model, src)
        for field, read in reads:
            f = src.var("f")
            src.emit(2, f"{f} = {read}")
            gen.visit(field.type, (f, 2))
    src.emit(1, "except _ENCODE_ERRORS as exc:")
    src.emit(2, "raise _fail(datum, exc) from exc")
    src.emit(1, f"if len(out) > {int(max_size)}:")
    src.emit(2, "raise _too_big(len(out))")
    src.emit(1, "return out" if flat else "return bytes(out)")
    encoder: Callable[[Any], bytes] = src.build("encode", "datum")
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
    src = _decoder_source(writer, reader, limits, builders, 1, stream=stream)
    decoder: Decoder = src.build("decode", "b, p")
    return decoder


def compile_reader(
    schema: Schema | Any,
    *,
    header: bytes,
    max_size: int,
    slow: Callable[[bytes], Any],
    errors: tuple[type[BaseException], ...],
    on_error: Callable[[Exception, bytes], Exception],
    limits: DecodeLimits | None = None,
    builders: RecordBuilders | None = None,
) -> Callable[[bytes], Any]:
    """Return ``read(data)``: the decoder of ``schema`` (read as written) behind its entry checks.

    When ``data`` is ``bytes`` no longer than ``max_size`` that starts with ``header``,
    the body after the header is decoded in the same function (no call of a separate
    decoder) and any of ``errors`` it raises is re-raised as ``on_error(exc, data)``;
    any other input is ``slow(data)``. Equal to calling :func:`compile_decoder`'s
    decoder at ``len(header)`` behind those checks. Raises what :func:`compile_decoder`
    raises.
    """
    src = _decoder_source(schema, None, limits, builders, 2, stream=False)
    src.namespace.update(_HEADER=header, _slow=slow, _ERRORS=errors, _on_error=on_error)
    src.lines[:0] = [
        f"    if b.__class__ is not bytes or len(b) > {int(max_size)}"
        " or not b.startswith(_HEADER):",
        "        return _slow(b)",
        "    try:",
        f"        p = {len(header)}",
    ]
    src.emit(1, "except _ERRORS as exc:")
    src.emit(2, "raise _on_error(exc, b) from exc")
    reader: Callable[[bytes], Any] = src.build("read", "b")
    return reader


def _decoder_source(
    writer: Schema | Any,
    reader: Schema | Any | None,
    limits: DecodeLimits | None,
    builders: RecordBuilders | None,
    indent: int,
    *,
    stream: bool,
) -> Source:
    """Return the checked source of a decoder's body (see :func:`compile_decoder`) at ``indent``."""
    bounds = limits or DecodeLimits()
    wmodel = as_schema(writer)
    check_limits(wmodel, bounds.compile, "writer")
    rmodel = wmodel if reader is None else as_schema(reader)
    if rmodel is not wmodel:
        check_limits(rmodel, bounds.compile, "reader")
    src = Source(bounds.compile)
    src.emit(indent, "end = len(b)")
    gen = DecoderGen(wmodel, src, bounds.max_zero_size_items, builders.by_name if builders else {})
    result = gen.value(wmodel.root, (rmodel.root, rmodel), indent, "")
    if gen.uses_budget:
        src.lines.insert(1, "    " * indent + f"zb = {bounds.max_zero_size_items}")
    if stream:
        src.emit(indent, f"return {result}, p")
    else:
        src.emit(indent, "if p != end:")
        src.emit(indent + 1, "raise _InvalidBodyError('trailing bytes after the body')")
        src.emit(indent, f"return {result}")
    return src


def explain_encode_problem(schema: Schema | Any, datum: Any) -> str:
    """Return where and why ``datum`` does not fit ``schema`` (the slow path of errors)."""
    return _explain(as_schema(schema), datum)
