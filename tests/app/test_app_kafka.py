"""``choreo.App`` on a real Kafka broker: the same one line runs the saga on Kafka.

Each test uses its own topic prefix, so a shared broker with earlier runs' topics gives
the same result.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from choreo import App, SagaState, SqliteStore

pytestmark = [pytest.mark.kafka]

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "getting_started" / "schemas"


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_on_kafka_runs_a_paid_and_a_refused_booking(
    kafka_bootstrap: str, tmp_path: Path, hotel: ModuleType, events: ModuleType, client: str
) -> None:
    prefix = f"app-{uuid.uuid4().hex[:8]}."
    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, topic_prefix=prefix)
    with app.on_kafka(kafka_bootstrap, client=client, partitions=2, data_dir=tmp_path) as running:
        paid = running.start(
            hotel.room_booking,
            events.BookingRequested(booking_id="k-1", guest="Ada", nights=1, card="4242"),
        )
        refused = running.start(
            hotel.room_booking,
            events.BookingRequested(booking_id="k-2", guest="Bob", nights=1, card="0000"),
        )
        assert running.wait(paid, timeout=60).state is SagaState.COMPLETED
        failed = running.wait(refused, timeout=60)
        assert all(isinstance(s, SqliteStore) for s in running.stores.values())
    assert failed.state is SagaState.FAILED
    assert [e.event_type for e in failed.events][-1] == "hotel.bookings.BookingRejected"
    assert sorted(p.name for p in tmp_path.glob("*.inbox.db")) == [
        "booking.inbox.db",
        "rooms.inbox.db",
    ]


def test_run_serves_until_stopped(kafka_bootstrap: str, tmp_path: Path, hotel: ModuleType) -> None:
    app = App(
        [hotel.booking, hotel.rooms],
        schemas=SCHEMAS,
        topic_prefix=f"app-{uuid.uuid4().hex[:8]}.",
        track=False,
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            app.run(kafka_bootstrap, stop=stop, data_dir=tmp_path)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.inbox.db"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert thread.is_alive(), failures
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert failures == []


def test_a_run_without_workers_starts_sagas_the_services_elsewhere_handle(
    kafka_bootstrap: str, tmp_path: Path, hotel: ModuleType, events: ModuleType
) -> None:
    prefix = f"app-{uuid.uuid4().hex[:8]}."
    services = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, topic_prefix=prefix)
    starter = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, topic_prefix=prefix, track=False)
    with (
        services.on_kafka(kafka_bootstrap, data_dir=tmp_path / "services") as served,
        starter.on_kafka(kafka_bootstrap, workers=False, data_dir=tmp_path / "web") as web,
    ):
        assert web.workers == {}
        cid = web.start(
            hotel.room_booking,
            events.BookingRequested(booking_id="k-3", guest="Cy", nights=1, card="4242"),
        )
        assert served.wait(cid, timeout=60).state is SagaState.COMPLETED
