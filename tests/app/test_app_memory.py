"""``choreo.App`` on the in-memory bus: sagas run, stores are real, errors say how to fix."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from choreo import App, ConfigurationError, SagaState, SqliteStore, Store

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "getting_started" / "schemas"


def _request(events: ModuleType, booking_id: str, card: str) -> Any:
    return events.BookingRequested(booking_id=booking_id, guest="Ada", nights=1, card=card)


def test_in_memory_runs_a_paid_and_a_refused_booking(hotel: ModuleType, events: ModuleType) -> None:
    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS)
    with app.in_memory() as running:
        paid = running.start(
            hotel.room_booking, _request(events, "b-1", "4242"), correlation_id="b-1"
        )
        refused = running.start(hotel.room_booking, _request(events, "b-2", "0000"))
        done = running.wait(paid, timeout=20)
        failed = running.wait(refused, timeout=20)
        data_dir = running.data_dir
        rooms = running.stores["rooms"].connection
        free = rooms.execute("SELECT room FROM rooms WHERE booking_id IS NULL").fetchall()
        assert data_dir is not None and data_dir.is_dir()
        assert sorted(running.workers) == ["booking", "rooms"]
    assert paid == "b-1"
    assert done.state is SagaState.COMPLETED
    assert [e.event_type for e in done.events] == [
        "hotel.bookings.BookingRequested",
        "hotel.rooms.RoomHeld",
        "hotel.bookings.BookingConfirmed",
    ]
    assert failed.state is SagaState.FAILED
    assert "hotel.rooms.RoomReleased" in [e.event_type for e in failed.events]
    assert free == [(102,)]  # the paid booking holds 101; 102 was released
    assert not data_dir.exists()  # the temporary stores went with the run


def test_default_stores_give_handlers_a_real_database(
    hotel: ModuleType, events: ModuleType
) -> None:
    seen: list[object] = []
    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS)
    with app.in_memory() as running:
        assert all(isinstance(s, SqliteStore) for s in running.stores.values())

        def note(db: sqlite3.Connection) -> None:
            seen.append(db)
            db.execute("CREATE TABLE IF NOT EXISTS asked (id TEXT)")
            db.execute("INSERT INTO asked VALUES ('b-3')")

        cid = running.start(hotel.room_booking, _request(events, "b-3", "4242"), db_work=note)
        running.wait(cid, timeout=20)
        path = running.stores["booking"]
        assert isinstance(path, SqliteStore)
    assert isinstance(seen[0], sqlite3.Connection)


def test_store_url_names_each_service_file(
    tmp_path: Path, hotel: ModuleType, events: ModuleType
) -> None:
    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, store=f"{tmp_path}/{{service}}.db")
    with app.in_memory() as running:
        running.wait(running.start(hotel.room_booking, _request(events, "b-4", "0000")), timeout=20)
    for service, consumed in (("rooms", 2), ("booking", 2)):  # rooms: request, refusal
        with sqlite3.connect(tmp_path / f"{service}.db") as db:
            (rows,) = db.execute("SELECT count(*) FROM choreo_inbox").fetchone()
        assert rows == consumed, service  # the events each handled, kept in its own file


def test_store_factory_is_called_per_service(hotel: ModuleType, events: ModuleType) -> None:
    asked: list[str] = []

    def store(name: str) -> Store:
        asked.append(name)
        return SqliteStore(":memory:")  # the rooms service keeps its rooms in its store

    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, store=store)
    with app.in_memory() as running:
        trace = running.wait(running.start(hotel.room_booking, _request(events, "b-5", "1")))
    assert trace.state is SagaState.COMPLETED
    assert asked == ["booking", "rooms"]


def test_topic_prefix_and_shared_bus_keep_two_apps_apart(
    hotel: ModuleType, events: ModuleType
) -> None:
    from choreo import MemoryBus

    bus = MemoryBus()
    blue = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, topic_prefix="blue.")
    green = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, topic_prefix="green.")
    with blue.in_memory(bus=bus) as one, green.in_memory(bus=bus) as two:
        cid = one.start(hotel.room_booking, _request(events, "b-6", "4242"))
        assert one.wait(cid, timeout=20).state is SagaState.COMPLETED
        assert two.tracker is not None and two.tracker.get(cid) is None
        assert "blue.hotel.rooms.RoomHeld" in bus.topics()
        assert "hotel.rooms.RoomHeld" not in bus.topics()


def test_wait_for_a_saga_that_never_started_times_out(hotel: ModuleType) -> None:
    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS)
    with app.in_memory() as running, pytest.raises(TimeoutError, match="not seen by"):
        running.wait("nobody", timeout=0.3)


def test_without_a_tracker_wait_says_how_to_get_one(hotel: ModuleType, events: ModuleType) -> None:
    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS, track=False)
    with app.in_memory() as running:
        assert running.tracker is None
        cid = running.start(hotel.room_booking, _request(events, "b-7", "4242"))
        with pytest.raises(ConfigurationError, match="track=True"):
            running.wait(cid)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "schemas='schemas/'"),
        ({"schemas": "no/such/dir"}, "does not exist"),
        ({"schemas": SCHEMAS, "timeouts": True, "track": False}, "timeouts need the tracker"),
        ({"schemas": SCHEMAS, "deadline": 0}, "positive"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(
    hotel: ModuleType, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App([hotel.booking, hotel.rooms], **kwargs)


def test_services_are_checked(hotel: ModuleType) -> None:
    with pytest.raises(ConfigurationError, match="share a name"):
        App([hotel.booking, hotel.booking], schemas=SCHEMAS)
    with pytest.raises(ConfigurationError, match="not a choreo Service"):
        App(["booking"], schemas=SCHEMAS)  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="at least one"):
        App([], schemas=SCHEMAS)


def test_on_kafka_without_bootstrap_names_both_ways_to_give_it(
    hotel: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHOREO_KAFKA_BOOTSTRAP", raising=False)
    app = App([hotel.booking, hotel.rooms], schemas=SCHEMAS)
    with pytest.raises(
        ConfigurationError, match=r"on_kafka\('host:9092'\).*CHOREO_KAFKA_BOOTSTRAP"
    ):
        app.on_kafka()
    with pytest.raises(ConfigurationError, match="kafka-python"):
        app.on_kafka("127.0.0.1:1", client="kafka")


def test_a_saga_nobody_starts_names_the_fix(hotel: ModuleType, events: ModuleType) -> None:
    with App([hotel.rooms], schemas=SCHEMAS).in_memory() as running:
        with pytest.raises(ConfigurationError, match=r"service.starts\(saga\)"):
            running.start(hotel.room_booking, _request(events, "b-8", "4242"))
        with pytest.raises(ConfigurationError, match="no service named"):
            running.publisher("billing")


def test_getting_started_local_script_runs_both_sagas() -> None:
    import os
    import subprocess
    import sys

    project = SCHEMAS.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "local.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "b-1: Completed: BookingRequested -> RoomHeld -> BookingConfirmed",
        "b-2: Failed: BookingRequested -> RoomHeld -> PaymentRefused -> RoomReleased -> "
        "BookingRejected",
    ]
