"""The serde a worker uses (:class:`Serde`), and building it from services and schemas.

The event classes come from the services (every class a handler consumes, emits or fails
with, and their sagas' start and terminal events); the schemas from a directory of
``.avsc`` files or a registry already loaded. Used by ``choreo run`` and
:mod:`choreo.testing`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from choreo.choreography.service import Service
from choreo.errors import ConfigurationError
from choreo.model.events import Event, event_type_of

__all__ = ["Serde", "event_classes", "serde_for"]


class Serde(Protocol):
    """Turns events into bytes and back (e.g. :class:`choreo.avro.serde.EventSerde`)."""

    def encode(self, event: Event) -> bytes:
        """Return the encoded payload of ``event``."""
        ...

    def decode(self, event_type: str, data: bytes) -> Event:
        """Return the event of ``event_type`` encoded in ``data``.

        Raises :class:`~choreo.errors.UnknownEventError` for an unknown type and
        :class:`~choreo.errors.DecodeError` for bytes that do not decode.
        """
        ...


def event_classes(services: Iterable[Service]) -> list[type[Event]]:
    """Return every event class the services declare, each once, sorted by event type."""
    found: dict[str, type[Event]] = {}
    for service in services:
        for spec in service.handlers:
            for cls in (*spec.consumes, *spec.emits, *spec.fails_with):
                found.setdefault(event_type_of(cls), cls)
        for saga in service.sagas:
            for cls in (saga.start, *saga.completed, *saga.failed):
                found.setdefault(event_type_of(cls), cls)
    return [found[name] for name in sorted(found)]


def serde_for(
    services: Iterable[Service],
    *,
    schemas_dir: str | Path | None = None,
    registry: Any = None,
) -> Serde:
    """Return an Avro :class:`~choreo.avro.serde.EventSerde` for the services' event classes.

    Exactly one of ``schemas_dir`` (loaded with :func:`choreo.avro.loader.load_directory`)
    and ``registry`` (a loaded schema registry) must be given.
    """
    if (schemas_dir is None) == (registry is None):
        raise ConfigurationError("give exactly one of schemas_dir and registry")
    from choreo.avro.codec import SingleObjectCodec
    from choreo.avro.serde import EventSerde

    if registry is None:
        from choreo.avro.loader import load_directory

        registry = load_directory(Path(str(schemas_dir)))
    serde: Serde = EventSerde(SingleObjectCodec(registry), event_classes(services))
    return serde
