"""Find the services and sagas of a choreography by importing a module or a package.

A *target* names where to look:

- ``pkg.module``: the module's attributes that are :class:`~choreo.choreography.service.Service` or
  :class:`~choreo.choreography.service.Saga` objects;
- ``pkg``: the same for the package and, recursively, every module in it (a
  ``__main__`` module is never imported);
- ``pkg.module:attribute``: one attribute, which may be a Service, a Saga, a
  :class:`~choreo.choreography.graph.Choreography`, or a list/tuple of Services and Sagas.

Importing runs the modules' top-level code, as any import does; nothing else is called.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from choreo.choreography.graph import Choreography
from choreo.choreography.service import Saga, Service
from choreo.errors import ConfigurationError

__all__ = ["Discovered", "discover", "load_choreography"]

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


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name}: {exc}") from exc


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
