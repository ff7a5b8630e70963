"""Which sagas to list: the filters of :meth:`choreo.tracker.Tracker.find` in one value.

A :class:`SagaQuery` is what the CLI's ``choreo sagas`` options and the web viewer's
``/api/sagas`` parameters become; the tracker answers it from its saga index
(:mod:`choreo.tracker.index`).
"""

from __future__ import annotations

from dataclasses import dataclass

from choreo.tracker.model import SagaStatus

__all__ = ["SagaQuery"]


@dataclass(frozen=True, slots=True)
class SagaQuery:
    """The sagas matching every filter given (a field left at its default filters nothing).

    Sagas are listed newest first: by start time (the produced-at time of the first event
    in causal order; a saga with no event yet counts as starting at -1), ties by
    correlation id, descending.
    """

    status: SagaStatus | None = None
    """Only sagas with this status."""

    saga: str | None = None
    """Only sagas of this saga type (the saga header's name)."""

    since_ms: int | None = None
    """Only sagas started at or after this time (epoch ms)."""

    until_ms: int | None = None
    """Only sagas started at or before this time (epoch ms)."""

    stuck_only: bool = False
    """Only sagas marked stuck (whatever their status shows first)."""

    search: str | None = None
    """Only sagas whose correlation id contains this text, ignoring case."""

    def admits(self, status: SagaStatus, saga: str, stuck: bool) -> bool:
        """Return True when a saga with this status, type and stuck mark passes those filters."""
        return (
            (self.status is None or status is self.status)
            and (self.saga is None or saga == self.saga)
            and (stuck or not self.stuck_only)
        )
