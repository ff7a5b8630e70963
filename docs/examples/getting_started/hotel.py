"""The room-booking saga of the Getting started guide: two services, one compensation.

``booking`` opens the saga when a guest asks for a room and closes it; ``rooms`` holds a
room (a compensatable step) and releases it again when the payment is refused.

    BookingRequested ─▶ rooms.hold ─RoomHeld─▶ booking.charge (pivot) ─BookingConfirmed (completed)
    rooms.hold ─NoRoomAvailable─▶ booking.reject ─BookingRejected (failed)
    booking.charge ─PaymentRefused─▶ rooms.release ─RoomReleased─▶ booking.reject
"""

# --8<-- [start:saga]
from __future__ import annotations

from events import (
    BookingConfirmed,
    BookingRejected,
    BookingRequested,
    NoRoomAvailable,
    PaymentRefused,
    RoomHeld,
    RoomReleased,
)

from choreo import Context, Saga, Service

room_booking = Saga(
    "RoomBooking",
    start=BookingRequested,
    completed=[BookingConfirmed],
    failed=[BookingRejected],
)

booking = Service("booking", sagas=[room_booking])
booking.starts(room_booking)

rooms = Service("rooms", sagas=[room_booking])
# --8<-- [end:saga]

# The rooms service's state: which room holds which booking. Kept in memory to keep the
# first saga short; a real service keeps it in its store through ctx.db.
FREE_ROOMS = [101, 102]
HELD: dict[str, int] = {}


# --8<-- [start:handlers]
@rooms.step(on=BookingRequested, emits=RoomHeld, fails_with=NoRoomAvailable)
def hold(event: BookingRequested, ctx: Context) -> RoomHeld | NoRoomAvailable:
    """Hold a free room for the booking, or say that none is free."""
    if event.booking_id in HELD:  # a redelivery: hold the same room again
        return RoomHeld(booking_id=event.booking_id, room=HELD[event.booking_id], card=event.card)
    if not FREE_ROOMS:
        return NoRoomAvailable(booking_id=event.booking_id, reason="the hotel is full")
    room = HELD[event.booking_id] = FREE_ROOMS.pop(0)
    ctx.log.info("room %d held for %s", room, event.booking_id)
    return RoomHeld(booking_id=event.booking_id, room=room, card=event.card)


@rooms.compensation(undoes=hold, on=PaymentRefused, emits=RoomReleased)
def release(event: PaymentRefused) -> RoomReleased:
    """Free the room held for the booking (the compensation of ``hold``)."""
    room = HELD.pop(event.booking_id, 0)
    if room:
        FREE_ROOMS.append(room)
    return RoomReleased(booking_id=event.booking_id, room=room)


@booking.pivot(on=RoomHeld, emits=BookingConfirmed, fails_with=PaymentRefused)
def charge(event: RoomHeld) -> BookingConfirmed | PaymentRefused:
    """Charge the guest: the point of no return. The card 0000 is always refused."""
    if event.card == "0000":
        return PaymentRefused(booking_id=event.booking_id, reason="card refused")
    return BookingConfirmed(booking_id=event.booking_id, room=event.room)


@booking.compensation(
    undoes=room_booking, on=[NoRoomAvailable, RoomReleased], emits=BookingRejected
)
def reject(event: NoRoomAvailable | RoomReleased) -> BookingRejected:
    """End the saga as failed once every completed step was undone."""
    reason = event.reason if isinstance(event, NoRoomAvailable) else "payment refused"
    return BookingRejected(booking_id=event.booking_id, reason=reason)
# --8<-- [end:handlers]
