"""Generate a straight-line, validating Avro binary decoder for a (writer, reader) pair.

The generator walks the *writer's* schema (the bytes follow it) and resolves each node
against the reader's: promotions, fields matched by name or alias, reader defaults,
enum defaults, unions. A writer field the reader lacks is decoded (validated) and
dropped using the writer's own types, named types included. See
:mod:`choreo.avro.compiler` for the contract.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from typing import Any

from choreo.avro.codesource import (
    BEYOND_ANY_INPUT,
    INT_RANGE,
    LONG_RANGE,
    MinSize,
    ResolutionError,
    Source,
)
from choreo.avro.compat import names_match, resolve_branch
from choreo.avro.defaults import default_value
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

__all__ = ["DecoderGen"]

_Reader = tuple[Node, Schema]
"""A reader node with the schema its references resolve in."""
_Arg = tuple[_Reader, int, str]
"""The reader side, the indentation and the field path."""

_READS: dict[str, tuple[str, ...]] = {
    # writer primitive -> reader primitives that read it
    "null": ("null",),
    "boolean": ("boolean",),
    "int": ("int", "long", "float", "double"),
    "long": ("long", "float", "double"),
    "float": ("float", "double"),
    "double": ("double",),
    "string": ("string", "bytes"),
    "bytes": ("string", "bytes"),
}


class DecoderGen(Visitor[_Arg, str]):
    """Emit code decoding the writer's node into the reader's; return the value's expression."""

    def __init__(
        self,
        writer: Schema,
        src: Source,
        max_zero_size_items: int,
        builders: Mapping[str, Callable[..., Any]],
    ) -> None:
        super().__init__(writer)
        self.src = src
        self.max_zero_size_items = max_zero_size_items
        self.builders = builders
        self.sizes = MinSize(writer)
        self.uses_budget = False
        self._primitives: dict[str, Callable[[Primitive, Node, int, str], None]] = {
            "null": self.null,
            "boolean": self.boolean,
            "int": self.integer,
            "long": self.integer,
            "float": self.floating,
            "double": self.floating,
            "string": self.text,
            "bytes": self.text,
        }

    # --- helpers ---------------------------------------------------------------------

    def fail(self, indent: int, message: str) -> None:
        self.src.emit(indent, f"raise _InvalidBodyError({self.src.const(message, 'M')})")

    def varint(self, target: str, indent: int, *, zigzag: bool = True) -> None:
        """Emit code reading one varint at ``p`` into ``target`` (zig-zag decoded)."""
        e = self.src.emit
        e(indent, "x = b[p]")
        e(indent, "p += 1")
        if zigzag:  # one byte: its value from a table
            e(indent, "if x < 128:")
            e(indent + 1, f"{target} = _ZIGZAG[x]")
            e(indent, "else:")
            self.varint_tail(indent + 1)
            e(indent + 1, f"{target} = (x >> 1) ^ -(x & 1)")
            return
        e(indent, "if x > 127:")
        self.varint_tail(indent + 1)
        if target != "x":
            e(indent, f"{target} = x")

    def varint_tail(self, indent: int) -> None:
        """Emit code finishing a varint whose first byte ``x`` is over 127."""
        e = self.src.emit
        e(indent, "y = b[p]")  # two bytes inline (values below 2**13), longer ones in _tail
        e(indent, "if y < 128:")
        e(indent + 1, "x = (x & 127) | (y << 7)")
        e(indent + 1, "p += 1")
        e(indent, "else:")
        e(indent + 1, "x, p = _tail(b, p, x)")

    def length(self, indent: int) -> str:
        """Emit code reading a byte length and checking it against the remaining input.

        Returns the variable holding where the data ends; it starts at ``p + 1``. A
        one-byte length comes from a table (:data:`ONE_BYTE_END`), which sends an odd
        one and a longer varint past any end: a two-byte length is then read inline, any
        other by ``_length_at`` (the same checks, the same error).
        """
        e = self.src.emit
        q = self.src.var("q")
        message = self.src.const("length out of range", "M")
        e(indent, f"{q} = p + _END[b[p]]")
        e(indent, f"if {q} > end:")
        e(indent + 1, "x = b[p]")
        e(indent + 1, "if x > 127 and b[p + 1] < 128:")  # two bytes, inline (below 8 KiB)
        e(indent + 2, "x = (x & 127) | (b[p + 1] << 7)")
        e(indent + 2, "p += 1")
        e(indent + 2, f"{q} = p + 1 + ({BEYOND_ANY_INPUT} if x & 1 else x >> 1)")
        e(indent + 2, f"if {q} > end:")
        e(indent + 3, f"raise _InvalidBodyError({message})")
        e(indent + 1, "else:")
        e(indent + 2, f"p, {q} = _length_at(b, p, end, {message})")
        return q

    def mismatch(self, w: Node, r: _Reader, where: str) -> ResolutionError:
        wl, rl = type_label(w, self.schema), type_label(r[0], r[1])
        return ResolutionError(f"{where or 'value'}: cannot read {wl} as {rl}")

    def value(self, w: Node, reader: _Reader, indent: int, where: str) -> str:
        """Emit code decoding ``w`` resolved to ``reader``; return the value's expression."""
        w = self.schema.resolve(w)
        rschema = reader[1]
        r = rschema.resolve(reader[0])
        if isinstance(r, Union) and not isinstance(w, Union):
            branch = resolve_branch(w, r.branches, self.schema, rschema)
            if branch is None:
                raise ResolutionError(
                    f"{where or 'value'}: reader union {type_label(r, rschema)} has no branch "
                    f"for {type_label(w, self.schema)}"
                )
            r = rschema.resolve(r.branches[branch])
        return self.visit(w, ((r, rschema), indent, where))

    def named(self, w: Named, reader: _Reader, where: str) -> Any:
        """Return the reader's named type of the same kind and a matching name, or raise."""
        r = reader[0]
        if not isinstance(r, Named) or r.kind != w.kind:
            raise self.mismatch(w, reader, where)
        if not names_match(w, r):
            raise ResolutionError(
                f"{where or 'value'}: name {w.name} does not match {r.name} or its aliases"
            )
        return r

    # --- primitives ------------------------------------------------------------------

    def primitive(self, node: Primitive, arg: _Arg) -> str:
        reader, indent, where = arg
        if reader[0].kind not in _READS[node.kind]:
            raise self.mismatch(node, reader, where)
        t = self.src.var("t")
        self._primitives[node.kind](node, reader[0], indent, t)
        return "None" if node.kind == "null" else t

    def null(self, w: Primitive, r: Node, indent: int, t: str) -> None:
        return None  # nothing to read

    def boolean(self, w: Primitive, r: Node, indent: int, t: str) -> None:
        e = self.src.emit
        e(indent, "x = b[p]")
        e(indent, "p += 1")
        e(indent, "if x > 1:")
        self.fail(indent + 1, "boolean byte other than 0 or 1")
        e(indent, f"{t} = x == 1")

    def integer(self, w: Primitive, r: Node, indent: int, t: str) -> None:
        """Emit code reading an int or long: a one-byte varint from a table, in range.

        A two-byte one (None in :data:`ONE_BYTE_VALUE`) is read inline, a longer one by
        ``_int_at``, which checks an int's 32-bit range (a long's 64 bits are the varint's
        own limit).
        """
        e = self.src.emit
        low, high = INT_RANGE if w.kind == "int" else LONG_RANGE
        message = self.src.const(
            "int out of 32-bit range" if w.kind == "int" else "long out of range", "M"
        )
        e(indent, f"{t} = _VALUE[b[p]]")
        e(indent, f"if {t} is None:")
        e(indent + 1, "y = b[p + 1]")
        e(indent + 1, "if y < 128:")  # two bytes, inline: below 2**13 either way, in range
        e(indent + 2, "x = (b[p] & 127) | (y << 7)")
        e(indent + 2, f"{t} = (x >> 1) ^ -(x & 1)")
        e(indent + 2, "p += 2")
        e(indent + 1, "else:")
        e(indent + 2, f"{t}, p = _int_at(b, p, {low}, {high}, {message})")
        e(indent, "else:")
        e(indent + 1, "p += 1")
        if r.kind == "double":
            e(indent, f"{t} = float({t})")
        elif r.kind == "float":
            e(indent, f"{t} = _unpack_f(_pack_f(float({t})), 0)[0]")

    def floating(self, w: Primitive, r: Node, indent: int, t: str) -> None:
        size, unpack = (4, "_unpack_f") if w.kind == "float" else (8, "_unpack_d")
        self.src.emit(indent, f"{t} = {unpack}(b, p)[0]")
        self.src.emit(indent, f"p += {size}")

    def text(self, w: Primitive, r: Node, indent: int, t: str) -> None:
        e = self.src.emit
        q = self.length(indent)
        if r.kind == "string":
            e(indent, f"{t} = b[p + 1:{q}].decode()")
        else:
            e(indent, f"{t} = b[p + 1:{q}]")
            if w.kind == "string":
                e(indent, f"{t}.decode()")  # validate UTF-8 even when read as bytes
        e(indent, f"p = {q}")

    # --- named types -----------------------------------------------------------------

    def fixed(self, node: Fixed, arg: _Arg) -> str:
        reader, indent, where = arg
        r = self.named(node, reader, where)
        if r.size != node.size:
            raise ResolutionError(f"{where or node.name}: fixed size {node.size} → {r.size}")
        e = self.src.emit
        t = self.src.var("t")
        e(indent, f"if p + {node.size} > end:")
        self.fail(indent + 1, "truncated fixed")
        e(indent, f"{t} = b[p:p + {node.size}]")
        e(indent, f"p += {node.size}")
        return t

    def enum(self, node: Enum, arg: _Arg) -> str:
        reader, indent, where = arg
        r: Enum = self.named(node, reader, where)
        known = set(r.symbols)
        mapped = tuple(s if s in known else r.default for s in node.symbols)
        e = self.src.emit
        t, i = self.src.var("t"), self.src.var("i")
        table = self.src.const(mapped, "E")
        self.varint(i, indent)
        e(indent, f"if not 0 <= {i} < {len(mapped)}:")
        self.fail(indent + 1, "enum index out of range")
        e(indent, f"{t} = {table}[{i}]")
        if None in mapped:
            e(indent, f"if {t} is None:")
            self.fail(indent + 1, f"enum symbol unknown to the reader's {r.name}")
        return t

    def record(self, node: Record, arg: _Arg) -> str:
        reader, indent, where = arg
        r: Record = self.named(node, reader, where)
        rschema = reader[1]
        by_name: dict[str, int] = {}
        for index, field in enumerate(r.fields):
            by_name.setdefault(field.name, index)
        for index, field in enumerate(r.fields):
            for alias in field.aliases:
                by_name.setdefault(alias, index)
        values: dict[int, str] = {}
        for wfield in node.fields:
            here = f"{where}.{wfield.name}" if where else wfield.name
            target = by_name.get(wfield.name)
            if target is None or target in values:
                # skipped by the reader: decode as written (validating), with the
                # writer's own named types, then drop
                self.value(wfield.type, (wfield.type, self.schema), indent, here)
                continue
            rtype = (r.fields[target].type, rschema)
            values[target] = self.value(wfield.type, rtype, indent, here)
        args = [self.field_value(r, rschema, i, values, where) for i in range(len(r.fields))]
        t = self.src.var("t")
        builder = self.builders.get(r.name)
        inline = getattr(builder, "__choreo_slots__", None)
        if inline is not None and all(_is_name(a) for a, _ in inline[2]):
            # the builder's own slot stores (attributes of a Python class), without the call
            shell, cls, stores = inline
            name = self.src.const(shell, "H")
            # calling a shell that only inherits object's __new__ and __init__ costs less
            # than object.__new__(shell), which checks its argument first
            plain = shell.__new__ is object.__new__ and shell.__init__ is object.__init__
            self.src.emit(indent, f"{t} = {name}()" if plain else f"{t} = _new({name})")
            for attribute, position in stores:
                self.src.emit(indent, f"{t}.{attribute} = {args[position]}")
            self.src.emit(indent, f"{t}.__class__ = {self.src.const(cls, 'C')}")
        elif builder is not None:
            self.src.emit(indent, f"{t} = {self.src.const(builder, 'B')}({', '.join(args)})")
        else:
            items = ", ".join(f"{f.name!r}: {a}" for f, a in zip(r.fields, args, strict=True))
            self.src.emit(indent, f"{t} = {{{items}}}")
        return t

    def field_value(
        self, r: Record, rschema: Schema, index: int, values: Mapping[int, str], where: str
    ) -> str:
        """Return the expression of reader field ``index``: decoded, or its default."""
        if index in values:
            return values[index]
        field = r.fields[index]
        if not field.has_default:
            here = f"{where}.{field.name}" if where else field.name
            raise ResolutionError(
                f"{here}: the reader's field has no default and the writer lacks it"
            )
        default = default_value(rschema, field.type, field.default)
        const = self.src.const(default, "D")
        return f"_deepcopy({const})" if isinstance(default, list | dict) else const

    # --- collections -----------------------------------------------------------------

    def blocks(self, item_min: int, indent: int, body: Callable[[int], None]) -> None:
        """Emit the block loop shared by arrays and maps; ``body`` decodes one item."""
        e = self.src.emit
        c, bend, size = self.src.var("c"), self.src.var("be"), self.src.var("n")
        e(indent, "while True:")
        self.varint(c, indent + 1)
        e(indent + 1, f"if {c} == 0:")
        e(indent + 2, "break")
        e(indent + 1, f"{bend} = -1")
        e(indent + 1, f"if {c} < 0:")
        e(indent + 2, f"{c} = -{c}")
        self.varint(size, indent + 2)
        e(indent + 2, f"if {size} < 0 or {size} > end - p:")
        self.fail(indent + 3, "block size out of range")
        e(indent + 2, f"{bend} = p + {size}")
        if item_min > 0:
            e(indent + 1, f"if {c} * {item_min} > end - p:")
            self.fail(indent + 2, "collection longer than the remaining bytes")
        else:
            self.uses_budget = True
            e(indent + 1, f"zb -= {c}")
            e(indent + 1, "if zb < 0:")
            self.fail(indent + 2, "too many items of a zero-byte type")
        e(indent + 1, f"for _ in range({c}):")
        body(indent + 2)
        e(indent + 1, f"if {bend} >= 0 and p != {bend}:")
        self.fail(indent + 2, "block size does not match its items")

    def array(self, node: Array, arg: _Arg) -> str:
        reader, indent, where = arg
        r = reader[0]
        if not isinstance(r, Array):
            raise self.mismatch(node, reader, where)
        t, append = self.src.var("t"), self.src.var("a")
        self.src.emit(indent, f"{t} = []")
        self.src.emit(indent, f"{append} = {t}.append")

        def body(inner: int) -> None:
            item = self.value(node.items, (r.items, reader[1]), inner, where + "[]")
            self.src.emit(inner, f"{append}({item})")

        self.blocks(self.sizes.visit(node.items, None), indent, body)
        return t

    def map(self, node: Map, arg: _Arg) -> str:
        reader, indent, where = arg
        r = reader[0]
        if not isinstance(r, Map):
            raise self.mismatch(node, reader, where)
        t = self.src.var("t")
        self.src.emit(indent, f"{t} = {{}}")

        def body(inner: int) -> None:
            key = self.src.var("k")
            q = self.length(inner)
            self.src.emit(inner, f"{key} = b[p + 1:{q}].decode()")
            self.src.emit(inner, f"p = {q}")
            item = self.value(node.values, (r.values, reader[1]), inner, where + "{}")
            self.src.emit(inner, f"{t}[{key}] = {item}")

        self.blocks(1, indent, body)
        return t

    def union(self, node: Union, arg: _Arg) -> str:
        reader, indent, where = arg
        e = self.src.emit
        t, raw = self.src.var("t"), self.src.var("u")
        self.varint(raw, indent, zigzag=False)
        r, rschema = reader
        branches = r.branches if isinstance(r, Union) else (r,)
        for index, branch in enumerate(node.branches):
            e(indent, f"{'if' if index == 0 else 'elif'} {raw} == {index * 2}:")
            target = resolve_branch(branch, branches, self.schema, rschema)
            if target is None:
                label = type_label(branch, self.schema)
                self.fail(indent + 1, f"writer union branch {label} has no match in the reader")
                continue
            mark = len(self.src.lines)
            try:
                value = self.value(branch, (branches[target], rschema), indent + 1, where)
            except ResolutionError as exc:
                del self.src.lines[mark:]  # drop a half-emitted branch
                self.fail(indent + 1, str(exc))
                continue
            e(indent + 1, f"{t} = {value}")
        e(indent, "else:")
        self.fail(indent + 1, "union index out of range")
        return t


def _is_name(attribute: object) -> bool:
    """Return whether ``attribute`` may be written as ``obj.<attribute>`` in generated code."""
    if not isinstance(attribute, str):
        return False
    return attribute.isidentifier() and not keyword.iskeyword(attribute)
