"""Typed events to bytes and back: the event classes on top of a :class:`~choreo.avro.codec.Codec`.

The runtime calls :meth:`EventSerde.encode` and :meth:`EventSerde.decode`, or the
per-class and per-type functions that do the same (:meth:`EventSerde.encoder_for`, which
writes an event's attributes without building the datum dict, and
:meth:`EventSerde.decoder_for`); the tracker, which may not have the services' classes,
calls :meth:`EventSerde.decode_dict`.
Each class is checked against its schema once, when the serde is built
(:func:`choreo.avro.classes.check_event_class`), so a mismatch fails at start-up rather than on
the first event. The reader schema of ``decode`` is the latest version of the class's
schema, so older (and, where the evolution rules allow, newer) events decode into today's
class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from choreo.avro.classes import check_event_class, record_builders
from choreo.avro.codec import Codec
from choreo.avro.compiler import RecordBuilders
from choreo.errors import SchemaError, UnknownEventError
from choreo.model.events import Event, converters, event_type_of, field_readers

__all__ = ["EventSerde"]

logger = logging.getLogger(__name__)


class EventSerde:
    """Encodes typed events with a codec and decodes bytes into the registered classes.

    ``classes`` are the event classes this serde knows; each must name a schema in the
    codec's registry and match it, and one event type has one class (else
    :class:`~choreo.errors.SchemaError` here).
    ``encode`` also accepts an unregistered event class, checking it on first use.
    """

    def __init__(self, codec: Codec, classes: Iterable[type[Event]]) -> None:
        self.codec = codec
        self._encoders: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {}
        self._decoders: dict[str, tuple[type[Event], RecordBuilders]] = {}
        self._fast: dict[type, Callable[[Any], bytes]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Event]) -> None:
        """Check ``cls`` against its schema and make it known to ``encode`` and ``decode``."""
        name = event_type_of(cls)
        known = self._decoders.get(name)
        if known is not None and known[0] is not cls:
            raise SchemaError(
                f"two classes for event type {name}: {known[0].__qualname__} and {cls.__qualname__}"
            )
        registry = self.codec.registry
        check_event_class(cls, registry)
        to, _ = converters(cls)
        builders = RecordBuilders(record_builders(cls, registry.get(name).schema))
        self._encoders[cls] = (name, to)
        self._decoders[name] = (cls, builders)
        self._fast.pop(cls, None)

    def encode(self, event: Event) -> bytes:
        """Return the encoded bytes of ``event`` (its class's schema, latest version)."""
        encoder = self._fast.get(event.__class__)
        if encoder is None:
            encoder = self.encoder_for(event.__class__)
        return encoder(event)

    def encoder_for(self, cls: type[Event]) -> Callable[[Event], bytes]:
        """Return the function :meth:`encode` calls for events of ``cls`` (registering it).

        When the codec can (:meth:`~choreo.avro.codec.SingleObjectCodec.object_encoder`),
        it writes the event's attributes directly; otherwise it encodes the datum
        :func:`~choreo.model.events.to_avro` builds. Same bytes, same errors.
        """
        encoder = self._fast.get(cls)
        if encoder is not None:
            return encoder
        if cls not in self._encoders:
            self.register(cls)
        name, to_avro = self._encoders[cls]
        codec = self.codec
        direct = getattr(codec, "object_encoder", None)
        encoder = None if direct is None else direct(name, field_readers(cls), to_avro)
        if encoder is None:

            def encoder(event: Event) -> bytes:
                return codec.encode(name, to_avro(event))

        self._fast[cls] = encoder
        return encoder

    def decode(self, event_type: str, data: bytes) -> Event:
        """Return the event of ``event_type`` in ``data``, read with its class's schema.

        Raises :class:`~choreo.errors.UnknownEventError` when no class is registered for
        ``event_type`` and :class:`~choreo.errors.DecodeError` for bad bytes.
        """
        entry = self._decoders.get(event_type)
        if entry is None:
            raise UnknownEventError(f"no event class registered for {event_type!r}")
        event: Event = self.codec.decode(data, event_type, entry[1])
        return event

    def decoder_for(self, event_type: str) -> Callable[[bytes], Event]:
        """Return a function equal to ``decode(event_type, data)`` (faster when it can be).

        Raises :class:`~choreo.errors.UnknownEventError` when no class is registered for
        ``event_type``.
        """
        entry = self._decoders.get(event_type)
        if entry is None:
            raise UnknownEventError(f"no event class registered for {event_type!r}")
        builders = entry[1]
        codec = self.codec
        reader_for = getattr(codec, "reader_for", None)
        if reader_for is not None:
            read: Callable[[bytes], Event] = reader_for(event_type, builders)
            return read
        return lambda data: codec.decode(data, event_type, builders)

    def decode_dict(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return the writer schema's full name and the datum as written (no classes needed)."""
        return self.codec.decode_any(data)

    def event_class(self, event_type: str) -> type[Event]:
        """Return the class registered for ``event_type`` (UnknownEventError if none)."""
        entry = self._decoders.get(event_type)
        if entry is None:
            raise UnknownEventError(f"no event class registered for {event_type!r}")
        return entry[0]

    @property
    def known_types(self) -> frozenset[str]:
        """Return the event types (full names) that ``decode`` accepts."""
        return frozenset(self._decoders)
