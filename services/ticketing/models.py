"""The ticketing system's JSON, as in the seed (camelCase on the wire)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from podium import Model, SagaLog
from services.common.money import Amount
from services.common.payments import PaymentMethod
from services.ticketing.catalogue import MAX_SEATS

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def _no_repeats(seat_ids: list[str]) -> list[str]:
    repeated = sorted({s for s in seat_ids if seat_ids.count(s) > 1})
    if repeated:
        raise ValueError(f"seat {', '.join(repeated)} is listed more than once")
    return seat_ids


# -- the booking ---------------------------------------------------------------------------------------


class TicketRequest(Model):
    """The seed's ``TicketRequest``, plus an optional email.

    How long the seats are held is the deployment's setting (``PODIUM_TICKETING_HOLD``), not the
    client's: a ``holdSeconds`` in the body is ignored.
    """

    booking_id: str = Field(min_length=1, max_length=100)
    """Must be the booking id in the URL."""
    event_id: str = Field(min_length=1, max_length=100)
    seat_ids: list[str] = Field(min_length=1, max_length=MAX_SEATS)
    customer_id: str = Field(min_length=1, max_length=100, pattern=ID_PATTERN)
    total_amount: Amount
    """Must be the catalogue price of the seats (the shared money rule: more than 0, two decimals)."""
    customer_email: str | None = Field(default=None, pattern=EMAIL_PATTERN)
    """Where the tickets go; ``{customerId}@example.com`` when omitted (the simulated customer directory)."""

    seat_ids_once = field_validator("seat_ids")(_no_repeats)

    @field_validator("total_amount")
    @classmethod
    def _in_cents(cls, amount: Decimal) -> Decimal:
        # 150, 150.0 and 150.00 are one request: a repeat must not look different to RunOnce.
        return amount.quantize(Decimal("0.01"))

    @property
    def email(self) -> str:
        return self.customer_email or f"{self.customer_id}@example.com"


class PayRequest(Model):
    method: PaymentMethod = "card-visa"
    """The card token from the vault (``POST /PaymentService/Tokenize``) or a test token, checked here
    with the rule ``PaymentService`` uses, so a charge never refuses it mid-saga; never a card number.
    ``card-expired`` is declined (see the catalogue's test data)."""


class PayAnswer(Model):
    booking_id: str
    status: Literal["payment_received"]
    hold_expires_at: str | None = None


BookingStatus = Literal[
    "pending",
    "held",
    "paying",
    "confirmed",
    "sold_out",
    "seats_unavailable",
    "payment_failed",
    "expired",
    "cancelled",
    "failed",
]
"""``pending`` → ``held`` (waiting for payment) → ``paying`` → ``confirmed``; or one of the endings:
``sold_out``, ``seats_unavailable``, ``payment_failed``, ``expired``, ``cancelled``, ``failed``."""


class TicketResult(Model):
    booking_id: str
    event_id: str
    customer_id: str
    seat_ids: list[str]
    total_amount: float
    status: BookingStatus
    ticket_ids: list[str] = []
    """One per seat, in the order of ``seatIds``."""
    payment_id: str | None = None
    payment_status: str | None = None
    """``charged``, ``declined``, ``refunded``… as ``PaymentService`` has it."""
    hold_expires_at: str | None = None
    tickets_emailed: bool = False
    reason: str | None = None
    """Why the booking did not go through, and what was undone."""
    created_at: str
    saga: SagaLog | None = None
    """The compensation log (returned by ``Get``)."""


# -- seat maps -----------------------------------------------------------------------------------------

HoldStatus = Literal["held", "sold", "released", "expired"]


class HoldSeatsRequest(Model):
    holder: str = Field(min_length=1)
    """Who holds: a booking id. Holding again with the same id and seats returns the same hold."""
    seat_ids: list[str] = Field(min_length=1, max_length=MAX_SEATS)
    hold_ms: int = Field(ge=1)
    """How long to hold, in milliseconds: the booking's hold, so that the seat map's expiry and the
    saga's deadline are the same length (``SeatMap`` is private: only the saga sets it)."""
    customer_id: str | None = None

    seat_ids_once = field_validator("seat_ids")(_no_repeats)


class HolderRequest(Model):
    holder: str = Field(min_length=1)


class ExpireRequest(Model):
    holder: str = Field(min_length=1)
    hold_id: str = Field(min_length=1)
    """Only this hold expires (not a later one of the same holder)."""


class SeatHold(Model):
    holder: str
    hold_id: str
    seat_ids: list[str]
    status: HoldStatus
    customer_id: str | None = None
    held_at: str | None = None
    expires_at: str | None = None
    ended_at: str | None = None
    """When it was released or expired."""


class HoldAnswer(Model):
    outcome: Literal["held", "sold_out", "seats_unavailable"]
    hold: SeatHold | None = None
    """The hold, when the seats were held."""
    unavailable: list[str] = []
    """Requested seats someone else holds or bought."""
    available: int
    """Seats of the event still free (after this hold)."""
    reason: str | None = None


class ReleaseAnswer(Model):
    holder: str
    released: list[str]
    """Seats this call freed; empty when there was nothing to free (a second release)."""
    status: HoldStatus
    """The hold's status now."""


class SeatMapSummary(Model):
    """What every view of a seat map shows: the event, its price, and how many seats are left."""

    event_id: str
    title: str
    venue: str
    layout: str
    price: float
    capacity: int
    available: int


class SeatMapView(SeatMapSummary):
    held: list[str]
    sold: list[str]
    holds: list[SeatHold]
    """Every hold of this event, ended ones included."""


class SeatAvailability(SeatMapSummary):
    """``SeatMap/{eventId}/Availability``: the seat map as a customer sees it (who holds what is private)."""

    taken: list[str]
    """Seats held or sold, in venue order; every other seat is free."""


# -- tickets -------------------------------------------------------------------------------------------


class IssueRequest(Model):
    booking_id: str = Field(min_length=1)
    event_id: str = Field(min_length=1)
    seat_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)


class Ticket(Model):
    ticket_id: str
    booking_id: str | None = None
    event_id: str | None = None
    seat_id: str | None = None
    customer_id: str | None = None
    status: Literal["valid", "void"]
    issued_at: str | None = None
