"""Schema text into Python source, injection-proof: literals through ``repr``, names checked.

Code generation (:mod:`choreo.avro.codegen`) puts schema strings into Python source only
through these functions: a string becomes a ``repr`` literal (:func:`literal`,
:func:`docstring`), a name becomes syntax only after :func:`identifier` accepts it.
"""

from __future__ import annotations

import ast
import keyword
import textwrap

from choreo.errors import SchemaError

__all__ = ["docstring", "identifier", "literal"]


def identifier(text: str, what: str) -> str:
    """Return ``text`` if it is a Python identifier and not a keyword, else raise SchemaError.

    Every name from a schema that becomes Python syntax (a class, attribute or enum
    member) goes through here; every other schema string becomes a ``repr`` literal.
    """
    if not text.isidentifier() or keyword.iskeyword(text) or not text.isascii():
        raise SchemaError(f"codegen: {what} {text!r:.80} is not a usable Python identifier")
    return text


def literal(text: str) -> str:
    """Return ``repr(text)``, with double quotes when that changes nothing but the quotes.

    Swapping is safe exactly when ``text`` has no double quote: then the inside of
    ``repr``'s literal holds no quote that could end a double-quoted one.
    """
    out = repr(text)
    if out[0] == "'" and '"' not in text:
        out = f'"{out[1:-1]}"'
    if ast.literal_eval(out) != text:  # pragma: no cover - a guard, never expected
        raise SchemaError(f"codegen: cannot write {text!r:.60} as a literal")
    return out


def docstring(text: str, indent: int, width: int) -> list[str]:
    """Return a docstring of ``text`` built from ``repr``: triple-quoted when it has no ``"``."""
    text = " ".join(text.split())
    pad = " " * indent
    if '"' in text:
        return [f"{pad}{literal(text)}"]
    wrapped = textwrap.wrap(
        text, width - indent, break_long_words=False, break_on_hyphens=False
    ) or [""]
    inside = [repr(line)[1:-1] for line in wrapped]  # escaped; holds no double quote
    if len(inside) == 1 and len(inside[0]) + indent + 6 <= width:
        lines, value = [f'{pad}"""{inside[0]}"""'], text
    else:
        lines = [f'{pad}"""{inside[0]}', *(f"{pad}{line}" for line in inside[1:]), f'{pad}"""']
        value = "\n".join([wrapped[0], *(pad + line for line in wrapped[1:]), pad])
    if ast.literal_eval("\n".join(lines).strip()) != value:  # pragma: no cover - a guard
        raise SchemaError(f"codegen: cannot write the docstring {text!r:.60}")
    return lines
