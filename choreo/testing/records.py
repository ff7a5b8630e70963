"""What the saga test kit returns: records as published, and a saga's decoded events."""

from __future__ import annotations

from dataclasses import dataclass, field

from choreo.model.envelope import Envelope, Role, headers_to_dict
from choreo.model.events import Event
from choreo.transports.base import Record

__all__ = ["PublishedRecord", "SagaEvent"]


@dataclass(frozen=True, slots=True)
class PublishedRecord(Record):
    """A record as it was published (and acknowledged): a :class:`~choreo.transports.base.Record`.

    Its ``partition`` is 0 and its ``offset`` its position in the kit's log of published
    records (publication order, from 0), not the broker's: the kit sees records as its
    producers publish them. Being a ``Record``, it can be fed to a
    :class:`~choreo.tracker.Tracker` or :func:`~choreo.tracker.verify_records` as is.
    """

    @property
    def header_map(self) -> dict[str, bytes]:
        """Return the headers as a dict."""
        return headers_to_dict(self.headers)


@dataclass(frozen=True, slots=True)
class SagaEvent:
    """One event of a saga as the kit saw it published: envelope, decoded event, record."""

    envelope: Envelope
    event: Event
    record: PublishedRecord = field(repr=False)

    @property
    def event_type(self) -> str:
        """Return the event type (Avro full name)."""
        return self.envelope.event_type

    @property
    def role(self) -> Role:
        """Return the event's role in its saga."""
        return self.envelope.role
