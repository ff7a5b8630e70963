"""Find the services and sagas of a choreography by importing a module or a package.

A *target* names where to look:

- ``pkg.module``: the module's attributes that are :class:`~choreo.choreography.service.Service` or
  :class:`~choreo.choreography.service.Saga` objects;
- ``pkg``: the same for the package and, recursively, every module in it (a
  ``__main__`` module is never imported);
- ``pkg.module:attribute``: one attribute, which may be a Service, a Saga, a
  :class:`~choreo.choreography.graph.Choreography`, or a list/tuple of Services and Sagas;
- a file or directory path in place of the module (``./services/order.py``,
  ``services/``, ``app.py:saga``): a ``.py`` file or a package directory. It is imported
  under its dotted name: the directories above it that hold an ``__init__.py`` are its
  packages, and the first one that does not is put on ``sys.path``, so the file's own
  absolute and relative imports work as they do when it is imported by name.

Importing runs the modules' top-level code, as any import does; nothing else is called.
A module that cannot be imported (missing, a syntax error, an exception in its top-level
code) raises :class:`~choreo.errors.ConfigurationError` naming the module and the cause.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from choreo.choreography.graph import Choreography
from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError

__all__ = ["Discovered", "discover", "is_path", "load_choreography", "module_for_path"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Discovered:
    """The services and sagas found at a target, each once, in the order they were found."""

    services: tuple[Service, ...]
    sagas: tuple[Saga, ...]

    def choreography(self) -> Choreography:
        """Return the choreography of the services and sagas found."""
        return Choreography.from_services(self.services, self.sagas)


def discover(target: str) -> Discovered:
    """Return the services and sagas found at ``target`` (see the module docstring).

    Raises :class:`~choreo.errors.ConfigurationError` when the target cannot be imported,
    its attribute does not exist or holds something else, or nothing is found.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise ConfigurationError(f"target {target!r} names no module")
    module = _import(module_name)
    found: list[object]
    if attribute:
        try:
            value = getattr(module, attribute)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name} has no attribute {attribute!r}"
            ) from None
        found = _from_attribute(value, target)
    else:
        found = []
        for mod in _walk(module):
            found.extend(vars(mod).values())
    services: dict[int, Service] = {}
    sagas: dict[int, Saga] = {}
    for item in found:
        if isinstance(item, Service):
            services.setdefault(id(item), item)
        elif isinstance(item, Saga):
            sagas.setdefault(id(item), item)
    if not services and not sagas:
        raise ConfigurationError(f"no Service or Saga found in {target}")
    logger.debug("found %d services and %d sagas in %s", len(services), len(sagas), target)
    return Discovered(tuple(services.values()), tuple(sagas.values()))


def load_choreography(target: str) -> Choreography:
    """Return the choreography found at ``target`` (a Choreography attribute is used as is)."""
    module_name, _, attribute = target.partition(":")
    if attribute:
        value = getattr(_import(module_name), attribute, None)
        if isinstance(value, Choreography):
            return value
    return discover(target).choreography()


def is_path(name: str) -> bool:
    """Return True when a target's module part is a file or directory path, not a name."""
    separators = [os.sep, *([os.altsep] if os.altsep else [])]
    return name.endswith(".py") or any(sep in name for sep in separators) or name in (".", "..")


def module_for_path(name: str) -> str:
    """Return the dotted module name of the ``.py`` file or package directory ``name``.

    The first directory above it without an ``__init__.py`` is put first on ``sys.path``
    (see the module docstring). Raises :class:`~choreo.errors.ConfigurationError` when the
    path is not an existing ``.py`` file or package directory.
    """
    path = Path(name).resolve()
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise ConfigurationError(
                f"{name} is a directory without __init__.py: give a package directory, a .py "
                "file, or a module name (pkg.module)"
            )
        parts: list[str] = []
        top = path
    elif path.is_file() and path.suffix == ".py":
        parts = [] if path.stem == "__init__" else [path.stem]
        top = path.parent
    else:
        raise ConfigurationError(
            f"no Python file or package at {name}: give an existing .py file, a package "
            "directory, or a module name (pkg.module) importable from the current directory"
        )
    while (top / "__init__.py").is_file():
        parts.insert(0, top.name)
        top = top.parent
    if not parts or not all(part.isidentifier() for part in parts):
        raise ConfigurationError(
            f"{name} cannot be imported as a module: {'.'.join(parts) or path.name!r} is not "
            "a dotted Python name (rename the file or directory)"
        )
    if str(top) not in sys.path:
        sys.path.insert(0, str(top))
    return ".".join(parts)


def _import(module_name: str) -> ModuleType:
    if is_path(module_name):
        module_name = module_for_path(module_name)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name}: {exc} (run choreo from the project's root, so "
            "that its packages import, or give the module as a file path: ./path/to/module.py)"
        ) from exc
    except Exception as exc:  # the module's own top-level code failed: any exception
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise ConfigurationError(
            f"importing {module_name} failed: {type(exc).__name__}: {exc}; fix the module so "
            "that it imports (choreo --log-level DEBUG ... shows the traceback)"
        ) from exc


def _walk(module: ModuleType) -> Iterable[ModuleType]:
    """Yield ``module`` and, for a package, every module below it (sorted by name)."""
    yield module
    paths = getattr(module, "__path__", None)
    if paths is None:
        return
    names = sorted(
        info.name
        for info in pkgutil.walk_packages(paths, prefix=module.__name__ + ".", onerror=_onerror)
        if info.name.rpartition(".")[2] != "__main__"
    )
    for name in names:
        yield _import(name)


def _onerror(name: str) -> None:
    raise ConfigurationError(f"cannot import package {name}")


def _from_attribute(value: object, target: str) -> list[object]:
    if isinstance(value, Choreography):
        return [*value.services, *value.sagas]
    if isinstance(value, Service | Saga):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, Service | Saga) for v in value):
        return list(value)
    raise ConfigurationError(
        f"{target} is a {type(value).__qualname__}, not a Service, a Saga, a Choreography "
        "or a list of Services and Sagas"
    )
