"""Tests of the room-booking saga with choreo's test kit (no broker needed)."""

from pathlib import Path

import hotel
from events import BookingConfirmed, BookingRejected, BookingRequested, RoomReleased

from choreo.testing import SagaTestKit

SCHEMAS = Path(__file__).parent / "schemas"


def test_a_paid_booking_completes() -> None:
    with SagaTestKit([hotel.booking, hotel.rooms], schemas_dir=SCHEMAS) as kit:
        request = BookingRequested(booking_id="b-1", guest="Ada", nights=2, card="4242")
        cid = kit.start(hotel.room_booking, request, correlation_id="b-1")
        kit.run_until_idle()
        kit.assert_completed(cid)
        kit.assert_emitted(cid, BookingConfirmed)


def test_a_refused_card_releases_the_room() -> None:
    free_before = list(hotel.FREE_ROOMS)
    with SagaTestKit([hotel.booking, hotel.rooms], schemas_dir=SCHEMAS) as kit:
        request = BookingRequested(booking_id="b-2", guest="Bob", nights=1, card="0000")
        cid = kit.start(hotel.room_booking, request, correlation_id="b-2")
        kit.run_until_idle()
        kit.assert_failed(cid)
        kit.assert_emitted(cid, RoomReleased)
        kit.assert_emitted(cid, BookingRejected)
    assert sorted(hotel.FREE_ROOMS) == sorted(free_before)
