"""Building a dataclass instance by slot stores instead of its ``__init__``.

The compiled decoders of :mod:`choreo.model.events` build every decoded event; for a
slotted, frozen dataclass whose ``__init__`` only assigns, storing the slots directly (or
on a same-layout "shell" whose class is then set) costs under half as much. These
functions decide when that is safe and return what the decoder needs, and
:func:`fast_frozen_init` gives such a class an ``__init__`` built the same way (what
:class:`~choreo.model.events.Event` installs on its frozen, slotted subclasses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["fast_frozen_init", "shell_of", "slot_setters"]


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


def _runs_hook(klass: type[Any]) -> bool:
    """Return whether subclassing ``klass`` runs a hook of its own (not a shell-safe one).

    :class:`~choreo.model.events.Event`'s hook is marked ``__choreo_shell_safe__``: it
    ignores classes that are no dataclass, as shells are.
    """
    hook = klass.__dict__.get("__init_subclass__")
    function = getattr(hook, "__func__", hook)  # the class body's function, made a classmethod
    return hook is not None and not getattr(function, "__choreo_shell_safe__", False)


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
    if any(_runs_hook(k) for k in cls.__mro__[1:-1]):
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


def fast_frozen_init(cls: type[Any]) -> Callable[..., None] | None:
    """Return an ``__init__`` for a frozen slotted dataclass equal to its generated one, or None.

    A frozen dataclass's generated ``__init__`` stores each field through
    ``object.__setattr__`` (its own ``__setattr__`` refuses): a slot wrapper call per field,
    about half the cost of building a small event. The returned one takes the same
    parameters (same names, defaults, keyword-only marker, qualified name, so the same
    ``TypeError`` for a wrong call) and builds the same instance on a same-layout shell
    (see :func:`shell_of`): the class is set to the shell, the fields are stored plainly,
    the class is set back. An instance of any other class (a subclass that inherits
    ``__init__``) goes to the generated one. None unless ``cls`` is a frozen, slotted
    dataclass whose ``__init__`` is the generated one taking every field (no
    ``__post_init__``, ``InitVar``, ``default_factory`` or ``init=False`` field), and unless
    a probe instance built both ways comes out the same.
    """
    params = cls.__dict__.get("__dataclass_params__")
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if params is None or not (params.frozen and params.init) or code is None:
        return None
    if "__dataclass_builtins_object__" not in code.co_freevars + code.co_names:
        return None  # written by hand in the class body: the dataclass kept it
    fields = list(dataclasses.fields(cls))
    parameters = code.co_argcount + code.co_kwonlyargcount - 1  # without self
    if hasattr(cls, "__post_init__") or parameters != len(fields):
        return None  # InitVar pseudo-fields are parameters but not fields
    if any(not f.init or f.default_factory is not dataclasses.MISSING for f in fields):
        return None
    shell = shell_of(cls, fields)
    if shell is None:
        return None
    fast = _compile_init(cls, shell, fields, init)
    return fast if _same_build(cls, fields, init, fast) else None


def _compile_init(
    cls: type[Any], shell: type[Any], fields: list[dataclasses.Field[Any]], init: Any
) -> Callable[..., None]:
    """Return the shell-building ``__init__`` of ``cls`` (see :func:`fast_frozen_init`)."""
    # every other name of the function's own starts with "__", which no field's can (see
    # shell_of), and ``self`` is renamed as dataclasses does when a field is called so
    me = "__dataclass_self__" if any(f.name == "self" for f in fields) else "self"
    namespace: dict[str, Any] = {"__cls": cls, "__shell": shell, "__init": init}
    namespace["__set"] = object.__setattr__
    params, passed, marked = [me], [], False
    for index, field in enumerate(fields):
        if field.kw_only and not marked:
            params.append("*")
            marked = True
        param = field.name
        if field.default is not dataclasses.MISSING:
            namespace[f"__d{index}"] = field.default
            param = f"{field.name}=__d{index}"
        params.append(param)
        passed.append(f"{field.name}={field.name}" if field.kw_only else field.name)
    stores = [f"        {me}.{f.name} = {f.name}" for f in fields]
    text = "\n".join(
        [
            f"def __init__({', '.join(params)}):",
            f"    if {me}.__class__ is __cls:",
            f"        __set({me}, '__class__', __shell)",
            *stores,
            f"        {me}.__class__ = __cls",
            "    else:",
            f"        __init({me}, {', '.join(['', *passed])[2:]})",
        ]
    )
    exec(compile(text, f"<choreo fast init {cls.__qualname__}>", "exec"), namespace)  # noqa: S102
    fast: Callable[..., None] = namespace["__init__"]
    fast.__qualname__ = init.__qualname__
    fast.__module__ = init.__module__
    fast.__doc__ = init.__doc__
    fast.__annotations__ = dict(init.__annotations__)
    fast.__wrapped__ = init  # type: ignore[attr-defined]
    return fast


def _same_build(
    cls: type[Any], fields: list[dataclasses.Field[Any]], init: Any, fast: Callable[..., None]
) -> bool:
    """Return whether ``init`` and ``fast`` build the same instance from the same values."""
    values = {f.name: object() for f in fields}
    positional = [values[f.name] for f in fields if not f.kw_only]
    keywords = {f.name: values[f.name] for f in fields if f.kw_only}
    built = []
    try:
        for function in (init, fast):
            instance = object.__new__(cls)
            function(instance, *positional, **keywords)
            built.append(instance)
    except Exception:  # any surprise: keep the generated __init__
        return False
    return all(
        type(one) is cls and all(getattr(one, f.name) is values[f.name] for f in fields)
        for one in built
    )
