"""Reading a test kit's log and asserting on it: events, dead letters, expectations.

:class:`KitReading` is the half of :class:`~choreo.testing.SagaTestKit` that only reads
what was published: a saga's decoded events, its dead letters, a printable timeline, the
``assert_*`` helpers, and :meth:`~KitReading.expect`, which checks a saga's events and
the tracker's verdict on it at once. Every failed assertion prints the saga's timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from choreo.errors import ChoreoError
from choreo.model.envelope import Envelope, Header, Role
from choreo.model.events import Event, event_type_of
from choreo.runtime.deadletter import DeadLetter
from choreo.runtime.serdes import Serde
from choreo.testing.records import PublishedRecord, SagaEvent
from choreo.testing.tracking import KitTracking
from choreo.tracker.model import SagaState, SagaStatus, SagaTrace

__all__ = ["KitReading"]


class KitReading:
    """Reads and asserts on a kit's published records (see the module documentation)."""

    published: list[PublishedRecord]
    serde: Serde
    tracking: KitTracking
    _deadletter_topics: set[str]
    _decoded: dict[int, Event]

    # --- reading ---------------------------------------------------------------------

    def events(self, correlation_id: str) -> list[SagaEvent]:
        """Return the saga's events in publication order (dead letters excluded)."""
        found = []
        for record in self.published:
            if record.topic in self._deadletter_topics:
                continue
            headers = record.header_map
            if headers.get(Header.CORRELATION_ID, b"").decode("utf-8", "replace") != correlation_id:
                continue
            try:
                envelope = Envelope.from_headers(headers)
            except ChoreoError:
                continue
            found.append(SagaEvent(envelope, self._decode(envelope, record), record))
        return found

    def event_types(self, correlation_id: str) -> list[str]:
        """Return the types of the saga's events in publication order."""
        return [e.event_type for e in self.events(correlation_id)]

    def dead_letters(self, correlation_id: str | None = None) -> list[DeadLetter]:
        """Return the dead letters (of one saga when ``correlation_id`` is given)."""
        letters = []
        for record in self.published:
            if record.topic not in self._deadletter_topics:
                continue
            if correlation_id is not None:
                cid = record.header_map.get(Header.CORRELATION_ID, b"")
                if cid.decode("utf-8", "replace") != correlation_id:
                    continue
            letters.append(DeadLetter.from_record(record))
        return letters

    def timeline(self, correlation_id: str) -> str:
        """Return the saga's events as text lines: role, type, step, producing service."""
        lines = [
            f"  {e.role.value:<12} {e.event_type} (step {e.envelope.step}, by {e.envelope.service})"
            for e in self.events(correlation_id)
        ]
        return "\n".join(lines) or "  (no events)"

    # --- the tracker's view ------------------------------------------------------------

    def trace(self, correlation_id: str) -> SagaTrace:
        """Return the tracker's trace of one saga: state, status, timeline, violations.

        The same fold ``choreo trace`` shows, at the kit's virtual now. Raises
        AssertionError when no event of the saga was published.
        """
        return self.tracking.trace(correlation_id)

    # --- assertions ------------------------------------------------------------------

    def expect(
        self,
        correlation_id: str,
        events: Sequence[type[Event]] | None = None,
        *,
        status: SagaStatus | SagaState | str | None = None,
        notices: bool = False,
    ) -> SagaTrace:
        """Assert what happened to a saga; return the tracker's trace of it.

        ``events``: the saga's events are exactly these types, in publication order
        (``notice`` events such as deadline notices left out unless ``notices``).
        ``status``: the tracker's status of the saga (a :class:`SagaStatus` or
        :class:`SagaState`, or its name: ``"Completed"``, ``"Failed"``, ``"Stuck"``, ...).
        Whatever is asked, the saga must not break the saga guarantee (no
        :class:`~choreo.tracker.Violation`) unless ``status`` is ``Violated``.
        """
        trace = self.trace(correlation_id)
        if events is not None:
            seen = [
                e.event_type
                for e in self.events(correlation_id)
                if notices or e.envelope.role is not Role.NOTICE
            ]
            wanted = [event_type_of(cls) for cls in events]
            if seen != wanted:
                lines = "\n".join(f"  {t}" for t in wanted)
                self._fail(correlation_id, f"expected the events\n{lines}\nsaw")
        wanted_status = None if status is None else str(status)
        if trace.violations and wanted_status != SagaStatus.VIOLATED.value:
            found = "\n".join(f"  [{v.code}] {v.message}" for v in trace.violations)
            self._fail(correlation_id, f"breaks the saga guarantee:\n{found}\nits events")
        if wanted_status is not None and trace.status.value != wanted_status:
            self._fail(
                correlation_id,
                f"expected status {wanted_status}, the tracker says "
                f"{trace.status.value}; its events",
            )
        return trace

    def assert_completed(self, correlation_id: str) -> SagaEvent:
        """Assert the saga ended with a ``completed`` event and never failed; return it."""
        events = self.events(correlation_id)
        failed = [e for e in events if e.role in (Role.FAILED, Role.FAILURE)]
        completed = [e for e in events if e.role is Role.COMPLETED]
        if not completed or failed:
            self._fail(correlation_id, "did not complete")
        return completed[-1]

    def assert_failed(self, correlation_id: str) -> SagaEvent:
        """Assert the saga ended with a ``failed`` event; return it."""
        events = self.events(correlation_id)
        failed = [e for e in events if e.role is Role.FAILED]
        if not failed or any(e.role is Role.COMPLETED for e in events):
            self._fail(correlation_id, "did not fail")
        return failed[-1]

    def assert_emitted(
        self, correlation_id: str, event_type: type[Event], *, times: int | None = None
    ) -> list[SagaEvent]:
        """Assert the saga has an event of ``event_type`` (exactly ``times`` when given).

        Returns the matching events.
        """
        name = event_type_of(event_type)
        matching = [e for e in self.events(correlation_id) if e.event_type == name]
        if not matching or (times is not None and len(matching) != times):
            expected = "at least once" if times is None else f"{times} time(s)"
            self._fail(correlation_id, f"expected {name} {expected}, saw {len(matching)}")
        return matching

    def assert_not_emitted(self, correlation_id: str, event_type: type[Event]) -> None:
        """Assert the saga has no event of ``event_type``."""
        name = event_type_of(event_type)
        if any(e.event_type == name for e in self.events(correlation_id)):
            self._fail(correlation_id, f"{name} was emitted")

    def _fail(self, correlation_id: str, what: str) -> NoReturn:
        """Raise AssertionError saying ``what`` about the saga, with its timeline."""
        raise AssertionError(f"saga {correlation_id} {what}:\n{self.timeline(correlation_id)}")

    def _decode(self, envelope: Envelope, record: PublishedRecord) -> Event:
        """Return the decoded payload of ``record`` (decoded once)."""
        key = record.offset
        event = self._decoded.get(key)
        if event is None:
            event = self._decoded[key] = self.serde.decode(envelope.event_type, record.value or b"")
        return event
