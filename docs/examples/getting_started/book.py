"""Ask for a room: start one room-booking saga on Kafka.

Usage: python book.py BOOKING_ID GUEST CARD   (the broker from $CHOREO_KAFKA_BOOTSTRAP)
"""

from __future__ import annotations

import sys

import hotel
from events import BookingRequested

from choreo import App


# --8<-- [start:main]
def main(booking_id: str, guest: str, card: str) -> None:
    """Publish ``BookingRequested`` as the start of a RoomBooking saga and wait for the ack."""
    app = App([hotel.booking, hotel.rooms], schemas="schemas/", track=False)
    with app.on_kafka(workers=False) as running:  # the services run elsewhere (choreo run)
        request = BookingRequested(booking_id=booking_id, guest=guest, nights=1, card=card)
        running.start(hotel.room_booking, request, correlation_id=booking_id)
    print(f"booking {booking_id} requested")
# --8<-- [end:main]


if __name__ == "__main__":
    main(*sys.argv[1:4])
