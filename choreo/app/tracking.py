"""The tracker of an :class:`~choreo.app.App` run: a live tracker and, if asked, timeouts.

The tracker reads the app's own topics (its events and dead letters, by name), from the
beginning, in a consumer group of its own per run; it keeps what it read in memory (see
:class:`~choreo.tracker.Tracker` for its bounds), so nothing of it survives the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from choreo.app.parts import Wiring
from choreo.runtime.config import WorkerConfig

if TYPE_CHECKING:
    from choreo.avro.codec import SingleObjectCodec
    from choreo.tracker.live import LiveTracker
    from choreo.tracker.timeouts import TimeoutService
    from choreo.tracker.tracker import Tracker
    from choreo.transports.base import Transport

__all__ = ["start_tracking"]


def start_tracking(
    wiring: Wiring,
    transport: Transport,
    codec: SingleObjectCodec,
    config: WorkerConfig,
    *,
    topics: Sequence[str],
    group_id: str,
) -> tuple[Tracker, LiveTracker, TimeoutService | None]:
    """Start a live tracker over ``topics`` (and the timeout thread with ``timeouts=True``).

    Returns the tracker, its live reader and the timeout service (None unless asked);
    the caller stops the last two.
    """
    from choreo.choreography.graph import Choreography
    from choreo.tracker.fold import TIMEOUT_EVENT_TYPE
    from choreo.tracker.live import LiveTracker
    from choreo.tracker.timeouts import TimeoutService
    from choreo.tracker.tracker import Tracker

    options: dict[str, Any] = {}
    if wiring.deadline is not None:
        options["default_deadline_s"] = wiring.deadline
    tracker = Tracker(
        choreography=Choreography.from_services(wiring.services, wiring.sagas or None),
        decode=codec.decode_any,
        **options,
    )
    live = LiveTracker(
        tracker,
        transport,
        topics=topics,
        from_beginning=True,
        group_id=group_id,
        poll_timeout=0.2,
    ).start()
    timeouts = None
    if wiring.timeouts:
        timeouts = TimeoutService(
            tracker,
            transport,
            codec.encode,
            topic=config.topic_naming(TIMEOUT_EVENT_TYPE),
            interval=0.5,
        ).start()
    return tracker, live, timeouts
