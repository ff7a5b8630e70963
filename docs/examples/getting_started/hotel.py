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
from choreo.store import Migration, execute

room_booking = Saga(
    "RoomBooking",
    start=BookingRequested,
    completed=[BookingConfirmed],
    failed=[BookingRejected],
)

booking = Service("booking", sagas=[room_booking])
booking.starts(room_booking)

# The rooms service keeps its state in its own table, in the same database as choreo's
# inbox: its worker creates it at start (and the test kit too, in memory).
ROOMS = Migration(
    1,
    "the hotel's rooms and the booking holding each",
    [
        "CREATE TABLE rooms (room INTEGER PRIMARY KEY, booking_id TEXT UNIQUE)",
        "INSERT INTO rooms (room) VALUES (101), (102)",
    ],
)
rooms = Service("rooms", sagas=[room_booking], migrations=[ROOMS])
# --8<-- [end:saga]


# --8<-- [start:handlers]
@rooms.step(on=BookingRequested, emits=RoomHeld, fails_with=NoRoomAvailable)
def hold(event: BookingRequested, ctx: Context) -> RoomHeld | NoRoomAvailable:
    """Hold a free room for the booking, or say that none is free."""
    free = execute(ctx.db, "SELECT min(room) FROM rooms WHERE booking_id IS NULL").fetchone()[0]
    if free is None:
        return NoRoomAvailable(booking_id=event.booking_id, reason="the hotel is full")
    # Take the room only if it is still free: another replica may just have taken it.
    taken = execute(
        ctx.db,
        "UPDATE rooms SET booking_id = ? WHERE room = ? AND booking_id IS NULL",
        (event.booking_id, free),
    )
    if taken.rowcount != 1:
        raise RuntimeError(f"room {free} was taken meanwhile")  # retried: picks another
    ctx.log.info("room %d held for %s", free, event.booking_id)
    return RoomHeld(booking_id=event.booking_id, room=free, card=event.card)


@rooms.compensation(undoes=hold, on=PaymentRefused, emits=RoomReleased)
def release(event: PaymentRefused, ctx: Context) -> RoomReleased:
    """Free the room held for the booking (the compensation of ``hold``)."""
    row = execute(ctx.db, "SELECT room FROM rooms WHERE booking_id = ?", (event.booking_id,))
    held = row.fetchone()
    execute(ctx.db, "UPDATE rooms SET booking_id = NULL WHERE booking_id = ?", (event.booking_id,))
    return RoomReleased(booking_id=event.booking_id, room=held[0] if held else 0)


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
