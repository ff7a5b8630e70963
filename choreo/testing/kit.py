"""The saga test kit: several services on one in-memory bus, run in lockstep.

See :mod:`choreo.testing` for an example.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from choreo.choreography.service import Retry, Saga, Service
from choreo.errors import ChoreoError, ConfigurationError
from choreo.model.envelope import Envelope, Header, Role
from choreo.model.events import Event, event_type_of
from choreo.runtime.config import WorkerConfig
from choreo.runtime.deadletter import DeadLetter
from choreo.runtime.publisher import Publisher
from choreo.runtime.serdes import serde_for
from choreo.runtime.worker import Serde, Worker
from choreo.testing.recording import RecordingTransport
from choreo.testing.records import PublishedRecord, SagaEvent
from choreo.transports.base import Headers, Record, Transport

__all__ = ["SagaTestKit"]

_NO_WAIT = Retry(max_attempts=5, backoff=0.0, jitter=False)
_NO_WAIT_COMPENSATION = Retry(max_attempts=20, backoff=0.0, jitter=False)


class SagaTestKit:
    """Runs ``services`` on one memory bus; start sagas, run until idle, assert on events.

    Give the schemas as ``schemas_dir`` (a directory of ``.avsc`` files) or ``registry``
    (a loaded schema registry), or a ready ``serde``.
    """

    def __init__(
        self,
        services: Iterable[Service],
        *,
        schemas_dir: str | Path | None = None,
        registry: Any = None,
        serde: Serde | None = None,
        transport: Transport | None = None,
        config: WorkerConfig | None = None,
        group_prefix: str = "",
    ) -> None:
        self.services = list(services)
        if not self.services:
            raise ConfigurationError("SagaTestKit needs at least one service")
        if serde is None:
            serde = serde_for(self.services, schemas_dir=schemas_dir, registry=registry)
        self.serde = serde
        if transport is None:
            from choreo.transports.memory import MemoryTransport

            transport = MemoryTransport()
        self.published: list[PublishedRecord] = []
        """Every acknowledged record, in publication order."""
        self.transport = RecordingTransport(transport, self.published)
        self.config = config or WorkerConfig(
            poll_timeout=0.0, retry=_NO_WAIT, compensation_retry=_NO_WAIT_COMPENSATION
        )
        self.workers: dict[str, Worker] = {
            s.name: Worker(
                s,
                self.transport,
                serde,
                config=replace(self.config, group_id=f"{group_prefix}{s.name}")
                if group_prefix
                else self.config,
            )
            for s in self.services
            if s.handlers
        }
        self._publishers: dict[str, Publisher] = {}
        self._deadletter_topics = {w.deadletter_topic for w in self.workers.values()}
        self._decoded: dict[int, Event] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every worker and publisher."""
        for worker in self.workers.values():
            worker.close()
        for publisher in self._publishers.values():
            publisher.close()

    # --- driving ---------------------------------------------------------------------

    def start(
        self,
        saga: Saga,
        event: Event,
        *,
        correlation_id: str | None = None,
        service: Service | None = None,
    ) -> str:
        """Publish ``event`` as the start of ``saga``; return the correlation id.

        The start is published by ``service``, or by the kit's service that declares it
        starts ``saga``.
        """
        if service is None:
            starters = [s for s in self.services if saga.name in {x.name for x in s.started_sagas}]
            if not starters:
                raise ConfigurationError(f"no service of the kit starts saga {saga.name}")
            service = starters[0]
        publisher = self._publishers.get(service.name)
        if publisher is None:
            publisher = self._publishers[service.name] = Publisher(
                service, self.transport, self.serde, config=self.config
            )
        return publisher.start(saga, event, correlation_id=correlation_id)

    def run_once(self, timeout: float = 0.0) -> int:
        """Give every worker one batch, in order; return how many records they handled.

        ``timeout`` is how long each worker's poll may wait for records.
        """
        return sum(worker.run_once(timeout) for worker in self.workers.values())

    def run_until(
        self, condition: Callable[[], bool], *, timeout: float = 60.0, poll_timeout: float = 0.1
    ) -> int:
        """Run rounds until ``condition()`` is true; return the records handled.

        For transports where records arrive asynchronously (a real broker). Raises
        :class:`AssertionError` when ``timeout`` seconds pass first.
        """
        for worker in self.workers.values():
            worker.start()
        deadline = time.monotonic() + timeout
        total = 0
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s ({total} handled)")
            total += self.run_once(poll_timeout)
        return total

    def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Run rounds until no worker handles anything; return the records handled.

        Raises :class:`AssertionError` if the services are still busy after
        ``max_rounds`` rounds (an endless ping-pong of events).
        """
        total = 0
        for _ in range(max_rounds):
            handled = self.run_once()
            if not handled:
                return total
            total += handled
        raise AssertionError(f"still busy after {max_rounds} rounds ({total} records handled)")

    def publish_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        """Publish a hand-made record (e.g. a poison message) to ``topic``."""
        producer = self.transport.producer()
        try:
            producer.publish(topic, value, key=key, headers=headers)
            producer.flush()
        finally:
            producer.close()

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
        for index, record in enumerate(self.published):
            if record.topic not in self._deadletter_topics:
                continue
            letter = DeadLetter.from_record(
                Record(record.topic, 0, index, record.key, record.value, record.headers)
            )
            if correlation_id is not None:
                cid = record.header_map.get(Header.CORRELATION_ID, b"")
                if cid.decode("utf-8", "replace") != correlation_id:
                    continue
            letters.append(letter)
        return letters

    def timeline(self, correlation_id: str) -> str:
        """Return the saga's events as text lines: role, type, step, producing service."""
        lines = [
            f"  {e.role.value:<12} {e.event_type} (step {e.envelope.step}, by {e.envelope.service})"
            for e in self.events(correlation_id)
        ]
        return "\n".join(lines) or "  (no events)"

    # --- assertions ------------------------------------------------------------------

    def assert_completed(self, correlation_id: str) -> SagaEvent:
        """Assert the saga ended with a ``completed`` event and never failed; return it."""
        events = self.events(correlation_id)
        failed = [e for e in events if e.role in (Role.FAILED, Role.FAILURE)]
        completed = [e for e in events if e.role is Role.COMPLETED]
        if not completed or failed:
            raise AssertionError(
                f"saga {correlation_id} did not complete:\n{self.timeline(correlation_id)}"
            )
        return completed[-1]

    def assert_failed(self, correlation_id: str) -> SagaEvent:
        """Assert the saga ended with a ``failed`` event; return it."""
        events = self.events(correlation_id)
        failed = [e for e in events if e.role is Role.FAILED]
        if not failed or any(e.role is Role.COMPLETED for e in events):
            raise AssertionError(
                f"saga {correlation_id} did not fail:\n{self.timeline(correlation_id)}"
            )
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
            raise AssertionError(
                f"saga {correlation_id}: expected {name} {expected}, saw {len(matching)}:\n"
                f"{self.timeline(correlation_id)}"
            )
        return matching

    def assert_not_emitted(self, correlation_id: str, event_type: type[Event]) -> None:
        """Assert the saga has no event of ``event_type``."""
        name = event_type_of(event_type)
        if any(e.event_type == name for e in self.events(correlation_id)):
            raise AssertionError(
                f"saga {correlation_id}: {name} was emitted:\n{self.timeline(correlation_id)}"
            )

    def _decode(self, envelope: Envelope, record: PublishedRecord) -> Event:
        """Return the decoded payload of ``record`` (decoded once)."""
        key = id(record)
        event = self._decoded.get(key)
        if event is None:
            event = self._decoded[key] = self.serde.decode(envelope.event_type, record.value or b"")
        return event
