"""The travel system's JSON, as in the seed (camelCase on the wire)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from podium import Model, SagaLog

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class FlightRequest(Model):
    from_: str = Field(alias="from", min_length=3, max_length=3)
    to: str = Field(min_length=3, max_length=3)
    date: dt.date
    passengers: int = Field(gt=0, le=9)

    @model_validator(mode="after")
    def _different_airports(self) -> FlightRequest:
        if self.from_ == self.to:
            raise ValueError("from and to must be different airports")
        return self


class HotelRequest(Model):
    city: str = Field(min_length=1)
    check_in: dt.date
    check_out: dt.date
    guests: int = Field(gt=0, le=8)

    @model_validator(mode="after")
    def _dates_in_order(self) -> HotelRequest:
        if self.check_out <= self.check_in:
            raise ValueError(f"checkOut ({self.check_out}) must be after checkIn ({self.check_in})")
        if (self.check_out - self.check_in).days > 30:
            raise ValueError("a stay is at most 30 nights")
        return self


class TripRequest(Model):
    customer_id: str = Field(min_length=1, max_length=200)
    customer_email: str = Field(pattern=EMAIL_PATTERN)
    flight: FlightRequest
    hotel: HotelRequest


ReservationStatus = Literal["reserved", "confirmed", "cancelled"]


class FlightReservation(Model):
    id: str
    from_: str = Field(alias="from")
    to: str
    date: dt.date
    passengers: int
    price: float
    status: ReservationStatus


class HotelReservation(Model):
    id: str
    hotel: str
    city: str
    check_in: dt.date
    check_out: dt.date
    rooms: int
    price: float
    status: ReservationStatus


class FlightSummary(Model):
    id: str
    from_: str = Field(alias="from")
    to: str
    price: float
    status: str


class HotelSummary(Model):
    id: str
    hotel: str
    city: str
    price: float
    status: str


class PaymentSummary(Model):
    id: str
    amount: float
    status: str


class Booking(Model):
    trip_id: str
    customer_id: str
    flight: FlightSummary | None = None
    hotel: HotelSummary | None = None
    payment: PaymentSummary | None = None
    status: Literal["pending", "confirmed", "failed"]
    confirmation_email: bool = False
    created_at: str
    reason: str | None = None
    """Why the booking failed, and what was undone."""
    saga: SagaLog | None = None
    """The compensation log (returned by ``GetBooking``)."""
