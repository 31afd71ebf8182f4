"""``TripOrchestrator``: books a flight, a hotel and the payment as one saga, then emails the customer.

It is a virtual object keyed by trip id rather than a Restate workflow. A workflow's run handler can be
invoked once per key, and the engine answers 409 to a second ``BookTrip``; the seed expects the same
booking back instead ("same result from both requests"). An exclusive handler on the trip's key gives
exactly that: a second ``BookTrip`` waits for the first to finish and returns the stored booking (a
different request for the same trip id is refused with 409), while ``GetBooking`` is shared and answers
at any moment, including while the booking runs.

Those two are the travel system's public API (``travel:write``, ``travel:read``); the reservation and
inventory objects, and the shared payment and email services, are private: only this saga moves them.

Steps (each compensation is registered before its action):

1. reserve flight and hotel, in parallel          undo: cancel each
2. charge the customer (flight + hotel price)    undo: refund
3. confirm flight and hotel, in parallel         (undone by the cancels above)
4. email the confirmation (outside the saga: a bounce leaves the trip confirmed,
   with ``confirmationEmail: false``)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib

from restate import ObjectContext, ObjectSharedContext

from podium import Saga, SagaError, TerminalError, VirtualObject, read_saga_log
from services.common.notifications import EmailRequest, send_confirmation
from services.common.payments import ChargeRequest, RefundRequest, charge, refund
from services.common.payments import get_payment as get_payment_record
from services.travel import catalogue
from services.travel.models import (
    Booking,
    FlightReservation,
    FlightSummary,
    HotelReservation,
    HotelSummary,
    PaymentSummary,
    TripRequest,
)
from services.travel.reservations import flights, hotels

trips = VirtualObject("TripOrchestrator", system="travel")
SAGA = "book-trip"


def _fingerprint(req: TripRequest) -> str:
    return hashlib.sha256(req.model_dump_json().encode()).hexdigest()


def _save(ctx: ObjectContext, booking: Booking, fingerprint: str) -> None:
    ctx.set("booking", booking.model_dump(mode="json", exclude={"saga"}))
    ctx.set("fingerprint", fingerprint)


@trips.handler("BookTrip", public="write")
async def book_trip(ctx: ObjectContext, req: TripRequest) -> Booking:
    trip_id = ctx.key()
    # Requests outside the catalogue are the caller's mistake: 400 before anything is held.
    catalogue.airport(req.flight.from_, "flight.from")
    catalogue.airport(req.flight.to, "flight.to")
    catalogue.hotel(req.hotel.city)
    fingerprint = _fingerprint(req)
    stored = await ctx.get("booking", type_hint=dict)
    if stored is not None:
        if await ctx.get("fingerprint", type_hint=str) != fingerprint:
            raise TerminalError(f"trip {trip_id} was already booked with a different request", 409)
        return Booking.model_validate(stored)

    now = dt.datetime.fromtimestamp(await ctx.time(), tz=dt.UTC)
    booking = Booking(
        trip_id=trip_id,
        customer_id=req.customer_id,
        status="pending",
        created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    _save(ctx, booking, fingerprint)
    flight_id, hotel_id, payment_id = f"{trip_id}-flight", f"{trip_id}-hotel", f"{trip_id}-payment"

    try:
        async with Saga(ctx, SAGA) as saga:
            flight, hotel = await saga.parallel(
                saga.define(
                    "reserve-flight",
                    lambda: ctx.object_call(flights.reserve, key=flight_id, arg=req.flight),
                    compensate=lambda: ctx.object_call(flights.cancel, key=flight_id, arg=None),
                    payload={"reservationId": flight_id},
                ),
                saga.define(
                    "reserve-hotel",
                    lambda: ctx.object_call(hotels.reserve, key=hotel_id, arg=req.hotel),
                    compensate=lambda: ctx.object_call(hotels.cancel, key=hotel_id, arg=None),
                    payload={"reservationId": hotel_id},
                ),
            )
            booking.flight = _flight_summary(flight)
            booking.hotel = _hotel_summary(hotel)
            amount = round(flight.price + hotel.price, 2)
            _save(ctx, booking, fingerprint)

            payment = await saga.step(
                "charge-payment",
                lambda: ctx.object_call(
                    charge,
                    key=payment_id,
                    arg=ChargeRequest(
                        customer_id=req.customer_id, amount=amount, description=f"trip {trip_id}"
                    ),
                ),
                compensate=lambda: ctx.object_call(
                    refund, key=payment_id, arg=RefundRequest(reason=f"trip {trip_id} failed")
                ),
                payload={"paymentId": payment_id, "amount": amount},
            )
            booking.payment = PaymentSummary(id=payment_id, amount=payment.amount, status=payment.status)
            _save(ctx, booking, fingerprint)

            flight, hotel = await saga.parallel(
                saga.define(
                    "confirm-flight", lambda: ctx.object_call(flights.confirm, key=flight_id, arg=None)
                ),
                saga.define("confirm-hotel", lambda: ctx.object_call(hotels.confirm, key=hotel_id, arg=None)),
            )
            booking.flight = _flight_summary(flight)
            booking.hotel = _hotel_summary(hotel)
            booking.status = "confirmed"
            _save(ctx, booking, fingerprint)
    except SagaError as failure:
        await _record_failure(ctx, booking, failure, flight_id, hotel_id, payment_id)
        _save(ctx, booking, fingerprint)
        return booking

    booking.confirmation_email = await _send_confirmation(ctx, req, booking)
    _save(ctx, booking, fingerprint)
    return booking


async def _send_confirmation(ctx: ObjectContext, req: TripRequest, booking: Booking) -> bool:
    assert booking.flight is not None
    assert booking.hotel is not None
    assert booking.payment is not None
    body = (
        f"Trip {booking.trip_id} is confirmed.\n"
        f"Flight {booking.flight.from_} → {booking.flight.to} ({booking.flight.id}), "
        f"hotel {booking.hotel.hotel} in {booking.hotel.city} ({booking.hotel.id}).\n"
        f"Charged {booking.payment.amount:.2f}."
    )
    try:
        sent = await ctx.service_call(
            send_confirmation,
            EmailRequest(
                message_id=f"{booking.trip_id}-confirmation",
                to=req.customer_email,
                subject=f"Your trip {booking.trip_id} is confirmed",
                body=body,
            ),
        )
    except TerminalError:
        return False
    return sent.status == "delivered"


async def _record_failure(
    ctx: ObjectContext, booking: Booking, failure: SagaError, flight_id: str, hotel_id: str, payment_id: str
) -> None:
    """Mark the booking failed and show what each service now holds for it (cancelled, refunded)."""
    booking.status = "failed"
    booking.reason = failure.message
    with contextlib.suppress(TerminalError):  # 404: never reserved (sold out), nothing to show
        booking.flight = _flight_summary(await ctx.object_call(flights.get, key=flight_id, arg=None))
    with contextlib.suppress(TerminalError):
        booking.hotel = _hotel_summary(await ctx.object_call(hotels.get, key=hotel_id, arg=None))
    try:
        payment = await ctx.object_call(get_payment_record, key=payment_id, arg=None)
    except TerminalError:
        return
    booking.payment = PaymentSummary(id=payment_id, amount=payment.amount, status=payment.status)


def _flight_summary(flight: FlightReservation) -> FlightSummary:
    return FlightSummary(
        id=flight.id, from_=flight.from_, to=flight.to, price=flight.price, status=flight.status
    )


def _hotel_summary(hotel: HotelReservation) -> HotelSummary:
    return HotelSummary(
        id=hotel.id, hotel=hotel.hotel, city=hotel.city, price=hotel.price, status=hotel.status
    )


@trips.handler("GetBooking", kind="shared", public="read")
async def get_booking(ctx: ObjectSharedContext) -> Booking:
    stored = await ctx.get("booking", type_hint=dict)
    if stored is None:
        raise TerminalError(f"no booking for trip {ctx.key()}", 404)
    booking = Booking.model_validate(stored)
    booking.saga = await read_saga_log(ctx, SAGA)
    return booking
