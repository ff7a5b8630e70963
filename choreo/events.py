"""Typed events: Python classes that stand for Avro record schemas.

An event class is a frozen dataclass that subclasses :class:`Event` and names its Avro
schema in ``__avro_name__`` (a namespaced full name such as ``shop.orders.OrderCreated``).
``choreo schemas codegen`` writes such classes from ``schemas/``; users may also write them
by hand, and choreo checks them against the schema at start-up.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Event", "event_type_of"]


class Event:
    """Base class of typed events; subclasses are dataclasses naming their Avro schema."""

    __slots__ = ()
    __avro_name__: ClassVar[str]


def event_type_of(event: Event | type[Event]) -> str:
    """Return the event type (the Avro full name) of an event or an event class."""
    cls = event if isinstance(event, type) else type(event)
    try:
        return cls.__avro_name__
    except AttributeError:
        raise TypeError(
            f"{cls.__qualname__} does not name its Avro schema (__avro_name__)"
        ) from None
