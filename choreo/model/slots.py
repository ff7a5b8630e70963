"""Building a dataclass instance by slot stores instead of its ``__init__``.

The compiled decoders of :mod:`choreo.model.events` build every decoded event; for a
slotted, frozen dataclass whose ``__init__`` only assigns, storing the slots directly (or
on a same-layout "shell" whose class is then set) costs under half as much. These two
functions decide when that is safe and return what the decoder needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["shell_of", "slot_setters"]


def slot_setters(
    cls: type[Any], fields: list[dataclasses.Field[Any]]
) -> list[Callable[[Any, Any], None]] | None:
    """Return the slot setters of ``fields`` when building without ``__init__`` is safe.

    That is a slotted dataclass with a generated ``__init__`` taking every field and no
    ``__post_init__``: its ``__init__`` only assigns (through ``object.__setattr__`` when
    frozen, which costs about twice a direct slot store).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.init or hasattr(cls, "__post_init__"):
        return None
    if not all(f.init for f in fields) or "__slots__" not in cls.__dict__:
        return None
    setters = []
    for field in fields:
        for klass in cls.__mro__:
            descriptor = klass.__dict__.get(field.name)
            if descriptor is not None:
                break
        if descriptor is None or type(descriptor).__name__ != "member_descriptor":
            return None
        setters.append(descriptor.__set__)
    return setters


def shell_of(cls: type[Any], fields: list[dataclasses.Field[Any]]) -> type[Any] | None:
    """Return a mutable class with ``cls``'s layout, or None when that is not safe.

    A decoder fills an instance of it with plain slot stores and then sets its class to
    ``cls`` (CPython allows that between classes of identical layout): the instance
    ``cls``'s ``__init__`` would build, at under half the cost of the frozen dataclass's
    slot setters. Only for a class whose bases run no hook when subclassed, whose fields
    are all its own slots, and when a probe instance comes out right. The shell subclasses
    ``cls``'s base (the layouts must share it), so it is listed by that base's
    ``__subclasses__()``, named ``<class>Shell``; it is never an event class itself.
    """
    slots = cls.__dict__.get("__slots__")
    names = [f.name for f in fields]
    if type(cls) is not type or len(cls.__bases__) != 1 or not isinstance(slots, tuple):
        return None
    if any("__init_subclass__" in k.__dict__ for k in cls.__mro__[1:-1]):
        return None
    if set(names) - set(slots) or any(n.startswith("__") for n in slots):
        return None
    try:
        shell = type(f"{cls.__name__}Shell", cls.__bases__, {"__slots__": slots})
        probe: Any = object.__new__(shell)
        values = [object() for _ in names]
        for name, value in zip(names, values, strict=True):
            setattr(probe, name, value)
        probe.__class__ = cls
    except (TypeError, AttributeError, dataclasses.FrozenInstanceError):
        return None
    if type(probe) is not cls or any(
        getattr(probe, n) is not v for n, v in zip(names, values, strict=True)
    ):
        return None  # pragma: no cover - CPython let the class change but lost a value
    return shell
