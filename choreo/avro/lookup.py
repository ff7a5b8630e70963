"""Ask "is there a schema for this event type, and what is it?" of whatever holds schemas.

The graph check and the AsyncAPI export accept schemas in several shapes, duck-typed:

- a schema registry (:class:`choreo.avro.loader.LocalSchemaRegistry` or anything with
  ``names()`` and ``get(full_name)``);
- a mapping of full name -> Avro schema (JSON value or JSON text);
- any container of full names (``in`` works), for the existence check only;
- a directory (``str`` or :class:`os.PathLike`) of ``.avsc`` files, loaded with
  :func:`choreo.avro.loader.load_directory`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Container, Mapping
from typing import Any

from choreo.errors import ChoreoError

__all__ = ["avro_schema_of", "has_schema_predicate", "resolve_schemas"]


def resolve_schemas(schemas: object) -> object:
    """Return ``schemas`` itself, or the registry loaded from it when it is a directory path."""
    if isinstance(schemas, str | os.PathLike):
        from choreo.avro.loader import load_directory

        return load_directory(os.fspath(schemas))
    return schemas


def has_schema_predicate(schemas: object) -> Callable[[str], bool]:
    """Return a function telling whether ``schemas`` holds a schema of a given full name.

    Raises TypeError when ``schemas`` is none of the accepted shapes.
    """
    source = resolve_schemas(schemas)
    names = getattr(source, "names", None)
    if callable(names):
        known = frozenset(str(n) for n in names())
        return known.__contains__
    if isinstance(source, Container):
        container: Container[Any] = source
        return lambda full_name: full_name in container
    raise TypeError(
        f"schemas must be a registry, a mapping or container of names, or a directory; "
        f"got {type(source).__qualname__}"
    )


def avro_schema_of(schemas: object, full_name: str) -> dict[str, Any] | str | list[Any] | None:
    """Return the Avro schema (JSON value) of ``full_name`` in ``schemas``, or None."""
    source = resolve_schemas(schemas)
    getter = getattr(source, "get", None)
    if not callable(getter):
        return None
    try:
        found = getter(full_name)
    except (LookupError, ChoreoError):
        return None
    return _as_json_value(found)


def _as_json_value(found: object) -> dict[str, Any] | str | list[Any] | None:
    value: object = found
    schema = getattr(found, "schema", None)
    to_json = getattr(found, "to_json", None)
    if isinstance(schema, Mapping):
        value = dict(schema)
    elif callable(to_json):
        value = to_json()
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # a primitive type name such as "string"
            value = json.loads(value)
    return value if isinstance(value, dict | list | str) else None
