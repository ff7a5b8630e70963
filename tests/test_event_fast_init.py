"""Event's shell-building ``__init__`` for frozen, slotted dataclasses (choreo.model.slots).

Pinned to the generated ``__init__``: the same instances, the same parameters and
defaults, the same errors; and left out wherever it could differ.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

import pytest

from choreo.model.events import Event
from choreo.model.slots import fast_frozen_init


def _fast(cls: type) -> bool:
    return cls.__init__.__code__.co_filename.startswith("<choreo fast init")


@dataclass(frozen=True, slots=True)
class Placed(Event):
    __avro_name__: ClassVar[str] = "t.Placed"
    order_id: str
    quantity: int
    note: str = "none"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Keyed(Event):
    __avro_name__: ClassVar[str] = "t.Keyed"
    a: str
    b: int = 3


@dataclass(frozen=True, slots=True)
class Mixed(Event):
    __avro_name__: ClassVar[str] = "t.Mixed"
    a: str
    b: int = field(default=1, kw_only=True)


def _reference(cls: type, *args: object, **kwargs: object) -> object:
    """Build with the generated __init__ the fast one replaced."""
    instance = object.__new__(cls)
    cls.__init__.__wrapped__(instance, *args, **kwargs)
    return instance


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (Placed, ("o-1", 2), {}),
        (Placed, ("o-1", 2, "n", ("x",)), {}),
        (Placed, ("o-1",), {"quantity": 2, "tags": ("y",)}),
        (Keyed, (), {"a": "x"}),
        (Keyed, (), {"a": "x", "b": 9}),
        (Mixed, ("x",), {"b": 2}),
    ],
)
def test_same_instance_as_the_generated_init(cls: type, args: tuple, kwargs: dict) -> None:
    assert _fast(cls)
    built = cls(*args, **kwargs)
    reference = _reference(cls, *args, **kwargs)
    assert type(built) is cls
    assert built == reference
    assert hash(built) == hash(reference)
    assert repr(built) == repr(reference)
    for f in dataclasses.fields(cls):
        assert getattr(built, f.name) is getattr(reference, f.name)
    assert pickle.loads(pickle.dumps(built)) == built
    assert dataclasses.replace(built) == built


def test_defaults_are_the_same_objects() -> None:
    assert Placed("o", 1).tags is Placed.__init__.__wrapped__.__defaults__[1]


def test_still_frozen() -> None:
    placed = Placed("o", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        placed.order_id = "p"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("call", "cls"),
    [
        (Placed, Placed),
        (lambda: Placed("o"), Placed),
        (lambda: Placed("o", 1, "n", (), 5), Placed),
        (lambda: Placed("o", 1, nope=2), Placed),
        (lambda: Keyed("x"), Keyed),
        (Keyed, Keyed),
        (lambda: Mixed("x", 2), Mixed),
    ],
)
def test_same_errors_as_the_generated_init(call: Callable[[], object], cls: type) -> None:
    with pytest.raises(TypeError) as fast:
        call()
    generated = cls.__init__.__wrapped__
    cls.__init__ = generated
    try:
        with pytest.raises(TypeError) as reference:
            call()
    finally:
        cls.__init__ = fast_frozen_init(cls)
    assert str(fast.value) == str(reference.value)


def test_signature_and_names_kept() -> None:
    generated = Placed.__init__.__wrapped__
    assert inspect.signature(Placed) == inspect.signature(generated.__get__(object()))
    assert Placed.__init__.__qualname__ == generated.__qualname__
    assert Placed.__init__.__annotations__ == generated.__annotations__


def test_a_subclass_inheriting_init_keeps_its_class() -> None:
    class Sub(Placed):
        __slots__ = ("extra",)

    sub = Sub("o", 1)
    assert type(sub) is Sub
    assert sub.order_id == "o"
    assert sub.quantity == 1


def test_the_decoder_shell_still_applies() -> None:
    from choreo.model.slots import shell_of

    assert shell_of(Placed, list(dataclasses.fields(Placed))) is not None


def test_left_alone_where_it_could_differ() -> None:
    @dataclass(frozen=True, slots=True)
    class Posted(Event):
        a: str

        def __post_init__(self) -> None:
            object.__setattr__(self, "a", self.a.upper())

    @dataclass(frozen=True, slots=True)
    class Hand(Event):
        a: str

        def __init__(self, a: str) -> None:
            object.__setattr__(self, "a", a.strip())

    @dataclass(frozen=True, slots=True)
    class Factory(Event):
        a: list[str] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class NoInit(Event):
        a: str
        b: str = field(default="x", init=False)

    @dataclass(frozen=True, slots=True)
    class WithInitVar(Event):
        a: str
        seed: InitVar[int] = 0

    @dataclass(frozen=True)
    class Unslotted(Event):
        a: str

    @dataclass(slots=True)
    class Mutable(Event):
        a: str

    for cls in (Posted, Hand, Factory, NoInit, WithInitVar, Unslotted, Mutable):
        assert not cls.__init__.__code__.co_filename.startswith("<choreo fast init"), cls
    assert Posted("x").a == "X"
    assert Hand(" y ").a == "y"
    assert Factory().a == []
    assert NoInit("a").b == "x"
    assert WithInitVar("a", 3).a == "a"


@pytest.mark.parametrize("name", ["self", "_cls", "_shell", "_init", "_set", "_d0"])
def test_a_field_named_like_the_inits_own_names_builds_the_same_event(name: str) -> None:
    """A field may be called ``self`` (an Avro field name codegen keeps) or like one of the
    names the shell-building ``__init__`` uses: the class is defined, builds on the fast
    path, and gives the same instance as the generated ``__init__``."""
    namespace: dict[str, object] = {}
    source = (
        "from dataclasses import dataclass\n"
        "from typing import ClassVar\n"
        "from choreo.model.events import Event\n"
        "@dataclass(frozen=True, slots=True)\n"
        "class Named(Event):\n"
        "    __avro_name__: ClassVar[str] = 't.Named'\n"
        f"    {name}: int\n"
        "    other: str = 'x'\n"
    )
    # compiled without this module's annotations future: the ClassVar must be a real one
    exec(compile(source, "<named>", "exec", dont_inherit=True), namespace)
    cls = namespace["Named"]
    assert isinstance(cls, type)
    built = cls(7, "y")
    assert _fast(cls)
    assert (getattr(built, name), built.other) == (7, "y")
    assert built == _reference(cls, 7, "y")
    assert cls(**{name: 8}) == _reference(cls, **{name: 8})


def test_the_init_signature_is_the_generated_ones_self_included() -> None:
    """``inspect.signature`` of ``__init__`` itself names the same parameters."""
    generated = Placed.__init__.__wrapped__
    assert inspect.signature(Placed.__init__) == inspect.signature(generated)
