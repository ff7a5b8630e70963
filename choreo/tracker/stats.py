"""What a tracker counts: every record fed, once, under what became of it."""

from __future__ import annotations

from typing import Final

_COUNTERS: Final = (
    "dead_letters", "duplicates", "events", "ignored", "invalid", "records", "skipped"
)
_REASON_PREFIX: Final = "unreadable: "


class TrackerStats:
    """Counters of what a tracker has read (plain ints, read under the tracker's lock).

    Every record fed is counted once: as a new event (``events``), a ``duplicate``, a
    dead letter, a record without choreo headers (``ignored``), a record below the
    checkpoint (``skipped``), or an unreadable one (``invalid``, broken down by reason
    in :attr:`reasons`).
    """

    __slots__ = (*_COUNTERS, "reasons")

    def __init__(self) -> None:
        self.records = 0
        """Records fed."""
        self.events = 0
        """Distinct events folded."""
        self.duplicates = 0
        """Records whose event id was already known."""
        self.ignored = 0
        """Records without choreo headers."""
        self.invalid = 0
        """Records with a broken choreo header (logged at debug level)."""
        self.dead_letters = 0
        """Dead-letter records seen."""
        self.skipped = 0
        """Records below the checkpoint's offsets (already folded before a restart)."""
        self.reasons: dict[str, int] = {}
        """Unreadable records per reason (see :mod:`choreo.tracker.accounting`)."""

    def unreadable(self, reason: str) -> None:
        """Count one unreadable record under ``reason``."""
        self.invalid += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def as_dict(self) -> dict[str, int]:
        """Return the counters by name, each unreadable reason as ``unreadable: <reason>``."""
        counters = {name: getattr(self, name) for name in _COUNTERS}
        counters.update({_REASON_PREFIX + k: v for k, v in self.reasons.items()})
        return counters

    def restore(self, saved: dict[str, int]) -> None:
        """Set the counters from :meth:`as_dict`'s form (missing ones are zero)."""
        for name in _COUNTERS:
            setattr(self, name, saved.get(name, 0))
        self.reasons = {
            k[len(_REASON_PREFIX) :]: v for k, v in saved.items() if k.startswith(_REASON_PREFIX)
        }
