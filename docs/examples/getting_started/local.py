"""Run both services of the room-booking saga in this process, on choreo's in-memory bus.

Usage: python local.py   (no broker needed)
"""

from __future__ import annotations

import hotel
from events import BookingRequested

from choreo import App


# --8<-- [start:main]
def main() -> None:
    """Book a room twice, once with a card that is refused, and print how each saga ended."""
    app = App([hotel.booking, hotel.rooms], schemas="schemas/")
    with app.in_memory() as running:
        for booking_id, card in (("b-1", "4242"), ("b-2", "0000")):
            request = BookingRequested(booking_id=booking_id, guest="Ada", nights=1, card=card)
            cid = running.start(hotel.room_booking, request, correlation_id=booking_id)
            trace = running.wait(cid)
            steps = " -> ".join(e.event_type.rsplit(".", 1)[-1] for e in trace.events)
            print(f"{cid}: {trace.status.value}: {steps}")
# --8<-- [end:main]


if __name__ == "__main__":
    main()
