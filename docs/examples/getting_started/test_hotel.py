"""Tests of the room-booking saga with choreo's test kit (no broker needed)."""

from pathlib import Path

import hotel
from events import (
    BookingConfirmed,
    BookingRejected,
    BookingRequested,
    NoRoomAvailable,
    PaymentRefused,
    RoomHeld,
    RoomReleased,
)

from choreo.testing import SagaTestKit

SCHEMAS = Path(__file__).parent / "schemas"
HELD = "SELECT room, booking_id FROM rooms WHERE booking_id IS NOT NULL"


def test_a_paid_booking_completes_and_keeps_its_room() -> None:
    with SagaTestKit([hotel.booking, hotel.rooms], schemas_dir=SCHEMAS) as kit:
        request = BookingRequested(booking_id="b-1", guest="Ada", nights=2, card="4242")
        cid = kit.when(hotel.room_booking, request, correlation_id="b-1")
        kit.expect(cid, [BookingRequested, RoomHeld, BookingConfirmed], status="Completed")
        assert kit.query(hotel.rooms, HELD) == [(101, "b-1")]


def test_a_refused_card_releases_the_room() -> None:
    with SagaTestKit([hotel.booking, hotel.rooms], schemas_dir=SCHEMAS) as kit:
        request = BookingRequested(booking_id="b-2", guest="Bob", nights=1, card="0000")
        cid = kit.when(hotel.room_booking, request, correlation_id="b-2")
        kit.expect(
            cid,
            [BookingRequested, RoomHeld, PaymentRefused, RoomReleased, BookingRejected],
            status="Failed",
        )
        assert kit.query(hotel.rooms, HELD) == []


def test_a_full_hotel_says_so() -> None:
    with SagaTestKit([hotel.booking, hotel.rooms], schemas_dir=SCHEMAS) as kit:
        kit.given(hotel.rooms, "UPDATE rooms SET booking_id = 'room-' || room")
        request = BookingRequested(booking_id="b-3", guest="Cy", nights=1, card="4242")
        cid = kit.when(hotel.room_booking, request, correlation_id="b-3")
        kit.expect(cid, [BookingRequested, NoRoomAvailable, BookingRejected], status="Failed")
        (rejected,) = kit.assert_emitted(cid, BookingRejected)
        assert rejected.event.reason == "the hotel is full"
