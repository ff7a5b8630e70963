"""Ask for a room: start one room-booking saga on Kafka.

Usage: python book.py BOOKING_ID GUEST CARD   (the broker from $CHOREO_KAFKA_BOOTSTRAP)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hotel
from events import BookingRequested

from choreo import Publisher, open_transport
from choreo.runtime import serde_for

SCHEMAS = Path(__file__).parent / "schemas"


# --8<-- [start:main]
def main(booking_id: str, guest: str, card: str) -> None:
    """Publish ``BookingRequested`` as the start of a RoomBooking saga and wait for the ack."""
    transport = open_transport("confluent", bootstrap=os.environ["CHOREO_KAFKA_BOOTSTRAP"])
    serde = serde_for([hotel.booking, hotel.rooms], schemas_dir=SCHEMAS)
    publisher = Publisher(hotel.booking, transport, serde)
    try:
        request = BookingRequested(booking_id=booking_id, guest=guest, nights=1, card=card)
        publisher.start(hotel.room_booking, request, correlation_id=booking_id)
        publisher.flush()
    finally:
        publisher.close()
    print(f"booking {booking_id} requested")
# --8<-- [end:main]


if __name__ == "__main__":
    main(*sys.argv[1:4])
